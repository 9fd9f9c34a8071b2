//! CLI tests: the `tenantry` binary's main paths against a test database, as an operator would run them, including its failures.

use std::process::Command;

use tenantry_db::testing::TestDatabase;

fn tenantry(db: &TestDatabase, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(args)
        .env("DATABASE_URL", db.server_url())
        .env_remove("TENANTRY_DATA_DIR")
        .output()
        .expect("running tenantry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db.superuser_url())
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .output()
        .unwrap();
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
    let url = db
        .server_url()
        .replace(&format!("dbname={}", db.name()), &format!("dbname={empty}"));
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", url)
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tenantry migrate"), "{err}");
}
