//! CLI tests: the `tenantry` binary's main paths against a test database, as an operator would run them, including its failures.

use std::process::Command;

use tenantry_db::testing::TestDatabase;

fn tenantry(db: &TestDatabase, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(args)
        .env("DATABASE_URL", db.server_url())
        .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
        .env_remove("TENANTRY_DATA_DIR")
        .output()
        .expect("running tenantry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that is expected to exit on its own, killing it after 60 s so a
/// regression (a server that starts instead of refusing) fails instead of hanging.
fn output_within_a_minute(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("command did not exit within 60 s: {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn json(db: &TestDatabase, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = tenantry(db, args);
    assert!(ok, "tenantry {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test]
async fn operator_creates_tenants_keys_and_roles_and_the_key_verifies() {
    let db = TestDatabase::new().await;
    let acme = json(&db, &["tenant", "create", "acme", "--json"]);
    let acme_id = acme[0]["tenant_id"].as_str().unwrap().to_owned();
    let child = json(
        &db,
        &[
            "tenant",
            "create",
            "acme-eu",
            "--parent",
            &acme_id,
            "--settings",
            r#"{"max_resources": 10}"#,
            "--json",
        ],
    );
    assert_eq!(child[0]["parent_id"], acme_id.as_str());
    assert_eq!(child[0]["settings"]["max_resources"], 10);

    let (ok, table, _) = tenantry(&db, &["tenant", "list"]);
    assert!(ok);
    assert!(
        table.starts_with("TENANT") && table.contains("acme-eu"),
        "{table}"
    );

    let role = json(&db, &["role", "create", &acme_id, "viewer", "--json"]);
    let role_id = role[0]["role_id"].as_str().unwrap().to_owned();
    let granted = json(
        &db,
        &[
            "role",
            "grant",
            &acme_id,
            &role_id,
            "resources.read",
            "--json",
        ],
    );
    assert_eq!(
        granted[0]["permissions"],
        serde_json::json!(["resources.read"])
    );

    let key = json(
        &db,
        &[
            "key",
            "create",
            &acme_id,
            "--role",
            &role_id,
            "--description",
            "ci",
            "--json",
        ],
    );
    let secret = key["key"].as_str().unwrap().to_owned();
    let identity = db
        .database()
        .verify_key(&secret)
        .await
        .unwrap()
        .expect("the printed key works");
    assert_eq!(identity.permissions, vec!["resources.read"]);

    let keys = json(&db, &["key", "list", &acme_id, "--json"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(
        !keys.to_string().contains(&secret),
        "listing never shows the secret"
    );

    let key_id = key["key_info"]["key_id"].as_str().unwrap().to_owned();
    let (ok, _, err) = tenantry(&db, &["key", "revoke", &acme_id, &key_id]);
    assert!(ok, "{err}");
    assert!(db.database().verify_key(&secret).await.unwrap().is_none());

    let suspended = json(&db, &["tenant", "suspend", &acme_id, "--json"]);
    assert_eq!(suspended[0]["status"], "suspended");
    let usage = json(&db, &["usage", &acme_id, "--json"]);
    assert_eq!(
        usage["resources"].as_array().unwrap().len(),
        2,
        "acme and its child"
    );
}

#[tokio::test]
async fn cli_errors_exit_non_zero_with_a_clear_message() {
    let db = TestDatabase::new().await;
    let missing = uuid::Uuid::new_v4().to_string();
    let (ok, _, err) = tenantry(&db, &["tenant", "show", &missing]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");

    let (ok, _, err) = tenantry(
        &db,
        &["tenant", "create", "x", "--settings", r#"{"bogus": 1}"#],
    );
    assert!(!ok);
    assert!(err.contains("unknown settings key \"bogus\""), "{err}");

    let (ok, _, err) = tenantry(&db, &["key", "create", "not-a-uuid"]);
    assert!(!ok);
    assert!(err.contains("not-a-uuid"), "{err}");

    let acme = json(&db, &["tenant", "create", "acme", "--json"]);
    let acme_id = acme[0]["tenant_id"].as_str().unwrap();
    let (ok, _, err) = tenantry(&db, &["role", "grant", acme_id, &missing, "resources.read"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test]
async fn serve_refuses_a_superuser_database_role() {
    let db = TestDatabase::new().await;
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", db.superuser_url())
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve tenant traffic") && err.contains("superuser"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database_and_says_what_to_run() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let empty = format!("e_{}", uuid::Uuid::new_v4().simple());
    su.batch_execute(&format!("CREATE DATABASE {empty}"))
        .await
        .unwrap();
    let mut config = db.server_config();
    config.dbname(&empty);
    let url = tenantry_db::conninfo(&config);
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", url)
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tenantry migrate"), "{err}");
}

/// GET over a plain TCP connection; returns the status line and body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn serve_with_a_database_url_answers_ready_and_stops_on_sigterm() {
    use std::io::BufRead;
    let db = TestDatabase::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db.server_url())
        .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
    assert!(first.contains("serving on"), "{first}");
    let ready = http_get(&addr, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let tenant = http_get(&addr, "/v1/tenant");
    assert!(
        tenant.starts_with("HTTP/1.1 401") && tenant.contains("application/problem+json"),
        "{tenant}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "serve exits cleanly on SIGTERM: {exit:?}");
}

#[tokio::test]
async fn context_key_prints_the_key_a_server_with_a_database_url_needs_and_serve_refuses_without_it(
) {
    let db = TestDatabase::new().await;
    // Printed as the superuser (the role migrations run as).
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["context-key"])
        .env("DATABASE_URL", db.superuser_url())
        .env_remove("TENANTRY_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(printed, db.context_key().expose());

    // The server's login may not read it.
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["context-key"])
        .env("DATABASE_URL", db.server_url())
        .env_remove("TENANTRY_DATA_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));

    // Without it, serve refuses to start and says where to get it.
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", db.server_url())
            .env_remove("TENANTRY_CONTEXT_KEY")
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TENANTRY_CONTEXT_KEY") && err.contains("tenantry context-key"),
        "{err}"
    );

    // A wrong key: the database refuses the server's sessions, and serve says why.
    let wrong = tenantry_db::ContextKey::new(db.context_key().id(), [9; 32]);
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", db.server_url())
            .env("TENANTRY_CONTEXT_KEY", wrong.expose())
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad signature"), "{err}");
}
