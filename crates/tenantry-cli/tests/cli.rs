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

    let (ok, table, err) = tenantry(&db, &["tenant", "list"]);
    assert!(ok);
    assert!(
        table.starts_with("TENANT") && table.contains("acme-eu"),
        "{table}"
    );
    assert!(!err.contains("next page"), "{err}");
    // A full page says where the next one starts (it stopped without a word).
    let (ok, _, err) = tenantry(&db, &["tenant", "list", "--limit", "1"]);
    assert!(ok && err.contains("the next page: --after "), "{err}");

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
    // A role's key holds its role's permissions, not all of them (the
    // table said `all`).
    let (ok, table, _) = tenantry(&db, &["key", "list", &acme_id]);
    assert!(
        ok && table.contains("its role's") && !table.contains(" all "),
        "{table}"
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
async fn operator_narrows_a_key_and_impersonates_a_member_for_a_bounded_time() {
    let db = TestDatabase::new().await;
    let acme = json(&db, &["tenant", "create", "acme", "--json"]);
    let acme_id = acme[0]["tenant_id"].as_str().unwrap().to_owned();
    let key = json(
        &db,
        &[
            "key",
            "create",
            &acme_id,
            "--scope",
            "resources.read",
            "--allow-from",
            "10.0.0.0/8",
            "--json",
        ],
    );
    assert_eq!(
        key["key_info"]["scopes"],
        serde_json::json!(["resources.read"])
    );
    assert_eq!(
        key["key_info"]["allowed_cidrs"],
        serde_json::json!(["10.0.0.0/8"])
    );
    let identity = db
        .database()
        .verify_key(key["key"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the printed key works");
    assert_eq!(identity.permissions, vec!["resources.read"]);
    // The table says how the key is narrowed (it looked unrestricted).
    let (ok, table, _) = tenantry(&db, &["key", "list", &acme_id]);
    assert!(ok);
    assert!(
        table.lines().next().unwrap().contains("SCOPES")
            && table.contains("resources.read")
            && table.contains("10.0.0.0/8"),
        "{table}"
    );

    // A member to act as: the first member owns the tenant.
    let su = db.superuser_client().await;
    let user: uuid::Uuid = su
        .query_one(
            "INSERT INTO tenantry.tenant_members (tenant_id, email) VALUES ($1::text::uuid, 'bob@acme.test') RETURNING user_id",
            &[&acme_id],
        )
        .await
        .unwrap()
        .get(0);
    let user = user.to_string();
    let (ok, _, err) = tenantry(
        &db,
        &["impersonate", "start", &acme_id, &user, "--minutes", "481"],
    );
    assert!(!ok && err.contains("480"), "{err}");
    let started = json(
        &db,
        &[
            "impersonate",
            "start",
            &acme_id,
            &user,
            "--minutes",
            "5",
            "--reason",
            "ticket 7",
            "--json",
        ],
    );
    let token = started["token"].as_str().unwrap().to_owned();
    let session = db
        .database()
        .verify_impersonation(&token)
        .await
        .unwrap()
        .expect("the printed token acts as the member");
    assert_eq!(session.user_id.to_string(), user);
    assert!(!session.permissions.contains(&"keys.write".to_owned()));
    let listed = json(&db, &["impersonate", "list", &acme_id, "--json"]);
    assert_eq!(listed[0]["reason"], "ticket 7");
    // The table says whose session each is (a listing holds descendants').
    let (ok, table, _) = tenantry(&db, &["impersonate", "list", &acme_id]);
    assert!(ok);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("TENANT"), "{table}");
    assert!(lines.next().unwrap().contains(&acme_id), "{table}");
    let id = started["impersonation_id"].as_str().unwrap();
    let stopped = json(&db, &["impersonate", "stop", &acme_id, id, "--json"]);
    assert!(stopped["ended_at"].is_string());
    assert!(db
        .database()
        .verify_impersonation(&token)
        .await
        .unwrap()
        .is_none());
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
    // A tenant's name where its id belongs: the message says ids are UUIDs.
    let (ok, _, err) = tenantry(&db, &["key", "create", "acme"]);
    assert!(!ok);
    assert!(err.contains("ids are UUIDs"), "{err}");
    // A server address without its scheme is named as such.
    let (ok, _, err) = tenantry(&db, &["top", "--once", "--url", "127.0.0.1:8080"]);
    assert!(!ok);
    assert!(
        err.contains("with its scheme, such as http://127.0.0.1:8080"),
        "{err}"
    );

    let acme = json(&db, &["tenant", "create", "acme", "--json"]);
    let acme_id = acme[0]["tenant_id"].as_str().unwrap();
    let (ok, _, err) = tenantry(&db, &["role", "grant", acme_id, &missing, "resources.read"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");

    // A key's options are checked as the HTTP API checks them, named by the
    // CLI's own options, and nothing is made.
    for (args, says) in [
        (&["--allow-from", "10.0.0.0/33"][..], "--allow-from"),
        (&["--allow-from", "10.0.0.1/24"][..], "write 10.0.0.0/24"),
        (
            &["--expires-at", "2020-01-01T00:00:00Z"][..],
            "--expires-at: expires_at must be in the future",
        ),
    ] {
        let mut all = vec!["key", "create", acme_id];
        all.extend_from_slice(args);
        let (ok, _, err) = tenantry(&db, &all);
        assert!(!ok, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let listed = json(&db, &["key", "list", acme_id, "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    // Isolating a tenant is Citus's: a single-node database says so, and bad
    // arguments are named before anything runs.
    let (ok, _, err) = tenantry(&db, &["tenant", "isolate", acme_id]);
    assert!(!ok);
    assert!(err.contains("not a Citus coordinator"), "{err}");
    let (ok, _, err) = tenantry(&db, &["tenant", "isolate", acme_id, "--to-node", "worker9"]);
    assert!(!ok);
    assert!(err.contains("expected host:port"), "{err}");
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly_and_into_a_full_disk_fails_with_a_message() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute("SELECT tenantry.create_tenant('t' || i) FROM generate_series(1, 30) i")
        .await
        .unwrap();
    let command = |stdout: std::process::Stdio| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.args(["tenant", "list", "--json"])
            .env("DATABASE_URL", db.server_url())
            .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
            .env_remove("TENANTRY_DATA_DIR")
            .stdout(stdout)
            .stderr(std::process::Stdio::piped());
        cmd
    };

    // `tenantry tenant list --json | head -0`: the reader is gone before
    // the first line.
    let mut child = command(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = command(full.into()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: writing to standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
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

/// A clock ahead of the database's by more than a minute stops serve at
/// start (one behind was refused already, its signed context sessions
/// expiring at once): it served, judging people's tokens and a key's
/// `expires_at` by another clock than the database's expiry of keys
/// (found by a review of time-based behaviour). Runs the binary under
/// faketime, its clock two minutes ahead of the database's.
#[tokio::test]
async fn serve_refuses_a_clock_two_minutes_ahead_of_the_databases() {
    assert!(
        Command::new("faketime").arg("--version").output().is_ok(),
        "faketime is missing: apt-get install faketime"
    );
    let db = TestDatabase::new().await;
    let out = output_within_a_minute(
        Command::new("faketime")
            .args(["-f", "+120s", env!("CARGO_BIN_EXE_tenantry")])
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", db.server_url())
            .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test_clock_skew_0000"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve tenant traffic") && err.contains("ahead of the database"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_over_an_unreachable_or_unknown_database_says_so_without_a_migrate_hint() {
    let db = TestDatabase::new().await;
    let mut unknown = db.server_config();
    unknown.dbname(format!("no_such_db_{}", uuid::Uuid::new_v4().simple()));
    for (url, says) in [
        (
            "postgres://tenantry_server@127.0.0.1:1/app".to_owned(),
            "cannot reach the database at DATABASE_URL",
        ),
        (tenantry_db::conninfo(&unknown), "does not exist"),
    ] {
        let out = output_within_a_minute(
            Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .env("DATABASE_URL", &url)
                .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
                .env("TENANTRY_ADMIN_TOKEN", "tadm_test"),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("tenantry migrate"), "{url}: {err}");
    }
}

/// A listener that accepts and never answers (a database frozen, a wrong
/// port behind a load balancer) held `migrate`, `doctor` and the other
/// commands on a connection of their own for ever (found by an operations
/// review); each now gives up after the URL's `connect_timeout`, and the
/// doctor says it could not check (exit code 2).
#[test]
fn commands_on_their_own_connection_give_up_on_a_database_that_never_answers() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepted and held open, never answered.
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in silent.incoming().take(4) {
            open.push(conn);
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/app?connect_timeout=1");
    for (args, code) in [
        (&["doctor"][..], 2),
        (&["migrate"][..], 1),
        (&["context-key"][..], 1),
    ] {
        let started = std::time::Instant::now();
        let out = output_within_a_minute(
            Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .args(args)
                .env("DATABASE_URL", &url)
                .env_remove("TENANTRY_DATA_DIR"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains("did not complete a connection"),
            "{args:?}: {err}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    drop(held);
}

/// A database reached that refuses the context key is said as such, not as
/// an outage: serve said "cannot reach the database" and the other commands
/// "database unavailable: Error occurred while creating a new object" (found
/// by an operator's review).
#[tokio::test]
async fn a_wrong_context_key_is_said_as_refused_not_as_an_unreachable_database() {
    let db = TestDatabase::new().await;
    let real = db.context_key().expose().to_owned();
    let (id, secret) = real.split_once(':').unwrap();
    let wrong = format!("{id}:{}", "0".repeat(secret.len()));
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["tenant", "list"][..],
    ] {
        let out = output_within_a_minute(
            Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .args(args)
                .env("DATABASE_URL", db.server_url())
                .env("TENANTRY_CONTEXT_KEY", &wrong)
                .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
                .env_remove("TENANTRY_DATA_DIR")
                .env_remove("TENANTRY_CONFIG"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("refused the server's context session (bad signature)")
                && err.contains("is the context key this database's"),
            "{args:?}: {err}"
        );
        for misleading in ["cannot reach", "creating a new object", "unavailable"] {
            assert!(!err.contains(misleading), "{args:?}: {err}");
        }
    }
}

/// Commands on a database tenantry was never installed in say to migrate
/// it, instead of `relation "tenantry.tenant_tables" does not exist` (found
/// by an operator's review).
#[tokio::test]
async fn commands_on_a_database_without_tenantrys_schema_say_to_migrate_it() {
    let db = TestDatabase::new().await;
    let name = format!("bare_{}", uuid::Uuid::new_v4().simple());
    db.superuser_client()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut bare = db.superuser_config();
    bare.dbname(&name);
    let url = tenantry_db::conninfo(&bare);
    for args in [
        &["doctor"][..],
        &["table", "list"][..],
        &["context-key", "list"][..],
        // (the tenant commands said "a role that may not read the context
        // key, or a database not migrated yet")
        &["tenant", "list"][..],
        &["key", "list", "00000000-0000-0000-0000-000000000001"][..],
    ] {
        let out = output_within_a_minute(
            Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .args(args)
                .env("DATABASE_URL", &url)
                .env_remove("TENANTRY_CONTEXT_KEY")
                .env_remove("TENANTRY_DATA_DIR")
                .env_remove("TENANTRY_CONFIG"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("has no tenantry schema yet: run `tenantry migrate`"),
            "{args:?}: {err}"
        );
    }
}

/// A misspelt people's-token variable stops `serve` with its name (it was
/// ignored, the setting it meant keeping its default: found by an outside
/// review).
#[test]
fn serve_refuses_a_misspelt_jwt_variable_by_name() {
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", "postgres://tenantry_server@127.0.0.1:1/app")
            .env("TENANTRY_JWT_ISSUER", "https://idp.example.test/")
            .env("TENANTRY_JWT_AUDIENCE", "api")
            .env(
                "TENANTRY_JWT_HS256_SECRET",
                "0123456789abcdef0123456789abcdef",
            )
            .env("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED", "true"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED is not a variable tenantry reads"),
        "{err}"
    );
}

/// A listen address in use is refused first: no embedded cluster is made
/// (or started) for a server that cannot serve (an audit met a new cluster,
/// its admin token and an unrelated warning before the bind error).
#[test]
fn serve_on_a_listen_address_in_use_says_so_before_making_a_cluster() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(&data)
            .env_remove("DATABASE_URL")
            .env_remove("TENANTRY_DATA_DIR"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("binding the listen address {addr}")) && err.contains("in use"),
        "{err}"
    );
    assert!(!data.exists(), "a cluster was made in {}", data.display());
}

#[tokio::test]
async fn serve_refuses_a_login_that_can_become_tenantry_owner_and_starts_once_it_is_revoked() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    // A login of its own, set up like tenantry_server (roles are the
    // cluster's: granting tenantry_owner to tenantry_server itself would
    // refuse the servers of the tests running beside this one).
    let (login, config) = db
        .login_role("srv", &["tenantry_server", "tenantry_owner"])
        .await;
    let url = tenantry_db::conninfo(&config);
    let serve = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &url)
            .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
            .env_remove("TENANTRY_DATA_DIR");
        cmd
    };

    let out = output_within_a_minute(&mut serve());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to serve tenant traffic")
            && err.contains("can become tenantry_owner")
            && err.contains(&format!("REVOKE tenantry_owner FROM {login};")),
        "{err}"
    );

    su.batch_execute(&format!("REVOKE tenantry_owner FROM {login}"))
        .await
        .unwrap();
    let mut child = serve()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    // It may have exited already (the regression this test is for).
    let _ = child.kill();
    child.wait().unwrap();
    su.batch_execute(&format!("DROP ROLE {login}"))
        .await
        .unwrap();
    assert!(first.contains("serving on"), "{first}");
}

/// A login acting for tenants that owns the database may `ALTER DATABASE`
/// what every tenant's sessions start with (a connection limit of 0 refuses
/// them all): `serve` refuses it, `--allow-table-problems` or not, and names
/// the fix (the doctor's rule `login_roles`, which also covers
/// `pg_read_all_data` and the other built-in roles: tests/login_roles.rs of
/// tenantry-db). The database's owner is this database's alone, so the
/// tests beside this one are not touched.
#[tokio::test]
async fn serve_refuses_a_login_that_owns_the_database_even_with_allow_table_problems() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    let (login, config) = db.login_role("srv", &["tenantry_server"]).await;
    su.batch_execute(&format!("ALTER DATABASE {} OWNER TO {login}", db.name()))
        .await
        .unwrap();
    let url = tenantry_db::conninfo(&config);
    for extra in [&[][..], &["--allow-table-problems"][..]] {
        let out = output_within_a_minute(
            Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(extra)
                .env("DATABASE_URL", &url)
                .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
                .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
                .env_remove("TENANTRY_DATA_DIR"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {err}");
        assert!(
            err.contains("refusing to serve tenant traffic")
                && err.contains(&format!("role {login} [login_roles]"))
                && err.contains("pg_database_owner")
                && err.contains(&format!(
                    "ALTER DATABASE {} OWNER TO tenantry_owner;",
                    db.name()
                )),
            "{extra:?}: {err}"
        );
    }
    su.batch_execute(&format!(
        "ALTER DATABASE {} OWNER TO tenantry_owner; DROP ROLE {login}",
        db.name()
    ))
    .await
    .unwrap();
}

/// A grant on tenantry's own context signing keys (rule own_grants) hands
/// SQL injected into the app every tenant's context: `serve` refuses it
/// like a login's reach, --allow-table-problems or not, naming the REVOKE.
#[tokio::test]
async fn serve_refuses_a_grant_on_the_context_signing_keys_even_with_allow_table_problems() {
    let db = TestDatabase::new().await;
    let su = db.superuser_client().await;
    su.batch_execute("GRANT SELECT ON tenantry.context_keys TO PUBLIC")
        .await
        .unwrap();
    for extra in [&[][..], &["--allow-table-problems"][..]] {
        let out = output_within_a_minute(
            Command::new(env!("CARGO_BIN_EXE_tenantry"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(extra)
                .env("DATABASE_URL", db.server_url())
                .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
                .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
                .env_remove("TENANTRY_DATA_DIR"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {err}");
        assert!(
            err.contains("refusing to serve tenant traffic")
                && err.contains("table tenantry.context_keys [own_grants]")
                && err.contains("REVOKE SELECT ON TABLE tenantry.context_keys FROM PUBLIC;"),
            "{extra:?}: {err}"
        );
    }
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
    http_get_with(addr, path, None)
}

/// [`http_get`], with a bearer token when given.
fn http_get_with(addr: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `tenantry serve` on `db` with the admin token `tadm_test`, bound to port 0;
/// returns the child, the address it printed and its stdout, which the caller
/// keeps open while the server runs (a closed pipe would fail its writes).
fn spawn_serve(
    db: &TestDatabase,
    stderr: std::process::Stdio,
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db.server_url())
        .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("serving on"), "{first}");
    let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
    (child, addr, stdout)
}

#[tokio::test]
async fn serve_with_a_database_url_answers_ready_and_stops_on_sigterm() {
    let db = TestDatabase::new().await;
    let (mut child, addr, _stdout) = spawn_serve(&db, std::process::Stdio::piped());
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

/// `tenantry` with DATABASE_URL set to `url` and no TENANTRY_CONTEXT_KEY unless `key` is given.
fn tenantry_at(url: &str, key: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.args(args)
        .env("DATABASE_URL", url)
        .env_remove("TENANTRY_CONTEXT_KEY")
        .env_remove("TENANTRY_DATA_DIR");
    if let Some(key) = key {
        cmd.env("TENANTRY_CONTEXT_KEY", key);
    }
    let out = cmd.output().expect("running tenantry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn context_key_rotate_list_and_retire_move_servers_to_a_new_key_without_a_gap() {
    let db = TestDatabase::new().await;
    let operator = db.superuser_url();
    let old = db.context_key().expose();
    let as_server = |key: &str, args: &[&str]| tenantry_at(&db.server_url(), Some(key), args);
    assert!(as_server(&old, &["tenant", "create", "acme"]).0);
    // The server's login without a key: told which setting it needs (it was
    // an "internal database error" naming a library field).
    let (ok, _, err) = tenantry_at(&db.server_url(), None, &["tenant", "list"]);
    assert!(!ok);
    assert!(
        err.contains("TENANTRY_CONTEXT_KEY") && !err.contains("internal"),
        "{err}"
    );

    // Rotate: the new key on stdout in the configured form, the next steps on stderr.
    let (ok, out, err) = tenantry_at(&operator, None, &["context-key", "rotate"]);
    assert!(ok, "{err}");
    let new = out.trim().to_owned();
    let parsed: tenantry_db::ContextKey = new.parse().expect("rotate prints <id>:<hex>");
    assert_eq!(parsed.id(), db.context_key().id() + 1);
    assert!(
        err.contains("TENANTRY_CONTEXT_KEY") && err.contains("context-key retire"),
        "{err}"
    );
    // The bare command prints the newest key, as before.
    let (ok, out, _) = tenantry_at(&operator, None, &["context-key"]);
    assert!(ok);
    assert_eq!(out.trim(), new);

    // Both keys verify: a server still on the old one and one on the new one.
    for key in [&old, &new] {
        let (ok, out, err) = as_server(key, &["tenant", "list"]);
        assert!(ok && out.contains("acme"), "{err}");
    }

    let (ok, table, _) = tenantry_at(&operator, None, &["context-key", "list"]);
    assert!(ok);
    assert!(
        table.starts_with("KEY") && table.lines().count() == 3,
        "{table}"
    );
    assert!(!table.contains(&new[2..]), "the list shows no secret");
    let (ok, out, _) = tenantry_at(&operator, None, &["context-key", "list", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert!(listed[0]["created_at"].is_string() && listed[0].get("secret").is_none());

    // Retire the old key: a server on it is refused (and says why), the new one serves.
    let (ok, out, err) = tenantry_at(&operator, None, &["context-key", "retire", "1"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "retired context key 1");
    let (ok, _, err) = as_server(&old, &["tenant", "list"]);
    assert!(!ok);
    assert!(err.contains("unknown key"), "{err}");
    assert!(as_server(&new, &["tenant", "list"]).0);

    // Refused: the last key, an unknown id, and the server's login for every subcommand.
    let (ok, _, err) = tenantry_at(&operator, None, &["context-key", "retire", "2"]);
    assert!(!ok && err.contains("last one"), "{err}");
    let (ok, _, err) = tenantry_at(&operator, None, &["context-key", "retire", "7"]);
    assert!(!ok && err.contains("not found"), "{err}");
    for args in [
        &["context-key", "rotate"][..],
        &["context-key", "list"],
        &["context-key", "retire", "2"],
    ] {
        let (ok, _, err) = as_server(&new, args);
        assert!(!ok && err.contains("permission denied"), "{args:?}: {err}");
    }
    let (_, out, _) = tenantry_at(&operator, None, &["context-key", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["key_id"],
        2
    );
    // The rotation and the retirement are on the operator's record, naming
    // the operator who ran them, not the database login.
    let su = db.superuser_client().await;
    let log: Vec<(String, String, String)> = su
        .query(
            "SELECT action, target_id, actor FROM tenantry.operator_audit_log
              WHERE target_type = 'context_key' ORDER BY occurred_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|(a, t, _)| (a.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("context_key.added", "2"), ("context_key.retired", "1")]
    );
    assert!(
        log.iter().all(|(_, _, actor)| actor.starts_with("cli:")),
        "{log:?}"
    );
}

#[tokio::test]
async fn operator_moves_a_tenant_to_its_schema_and_back_and_aborts_a_move_under_way() {
    let db = TestDatabase::new().await;
    let acme = json(&db, &["tenant", "create", "acme", "--json"]);
    let id = acme[0]["tenant_id"].as_str().unwrap().to_owned();
    let su = db.superuser_client().await;
    su.batch_execute(&format!(
        "INSERT INTO tenantry.resources (tenant_id, name)
         SELECT '{id}', 'doc-' || g FROM generate_series(1, 500) g"
    ))
    .await
    .unwrap();

    let moved = json(
        &db,
        &[
            "tenant",
            "move",
            &id,
            "--to",
            "schema",
            "--batch-rows",
            "120",
            "--json",
        ],
    );
    assert_eq!(moved["isolation"], "schema");
    assert_eq!(moved["rows_moved"], 500);
    let (ok, out, err) = tenantry(&db, &["tenant", "move", &id, "--to", "shared"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("is shared now: 500 rows moved"),
        "says what it did: {out}"
    );
    // Asked again: it says the tenant was there already, not that it moved.
    let (ok, out, err) = tenantry(&db, &["tenant", "move", &id, "--to", "shared"]);
    assert!(ok, "{err}");
    assert!(out.contains("is shared already: nothing moved"), "{out}");
    let home: String = su
        .query_one(
            "SELECT DISTINCT tableoid::regclass::text FROM tenantry.resources WHERE tenant_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(home, "tenantry.resources");

    // A move left half done (started, not finished) is given up: nothing moved.
    su.batch_execute(&format!(
        "BEGIN; SELECT tenantry.set_admin_context('op', true);
         SELECT tenantry.tier_move_start('{id}', 'schema');
         SELECT tenantry.tier_move_copy('{id}', 100); COMMIT;"
    ))
    .await
    .unwrap();
    let aborted = json(&db, &["tenant", "move", &id, "--abort", "--json"]);
    assert_eq!(aborted["move"], "aborted");
    let (count, moving): (i64, Option<String>) = {
        let r = su
            .query_one(
                "SELECT (SELECT count(*) FROM ONLY tenantry.resources WHERE tenant_id = t.tenant_id), t.moving_to
                 FROM tenantry.tenants t WHERE t.tenant_id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((count, moving), (500, None));
    let (ok, _, err) = tenantry(&db, &["tenant", "move", &id, "--to", "silo"]);
    assert!(!ok && err.contains("silo"), "{err}");
    let (ok, _, err) = tenantry(&db, &["tenant", "move", &id]);
    assert!(!ok && err.contains("--to"), "{err}");
}

#[tokio::test]
async fn migrate_brings_every_tenant_schema_to_the_latest_step_and_doctor_reports_those_behind() {
    let db = TestDatabase::new().await;
    for i in 0..3 {
        json(
            &db,
            &[
                "tenant",
                "create",
                &format!("silo-{i}"),
                "--isolation",
                "schema",
                "--json",
            ],
        );
    }
    let su = db.superuser_client().await;
    su.batch_execute(
        "CREATE INDEX resources_tenant_updated_idx ON tenantry.resources (tenant_id, updated_at);
         SELECT tenantry.add_tenant_schema_step('index resources by update time',
             'CREATE INDEX resources_tenant_updated_idx ON resources (tenant_id, updated_at)');",
    )
    .await
    .unwrap();
    let as_operator = |args: &[&str]| tenantry_at(&db.superuser_url(), None, args);

    let (ok, out, _) = as_operator(&["doctor", "--json"]);
    assert!(!ok, "the doctor fails while schemas are behind");
    let problems: serde_json::Value = serde_json::from_str(&out).unwrap();
    let behind: Vec<&serde_json::Value> = problems
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["rule"] == "tenant_schema_version")
        .collect();
    assert_eq!(behind.len(), 3, "{problems}");
    assert!(behind[0]["fix"]
        .as_str()
        .unwrap()
        .contains("tenantry migrate"));

    let (ok, out, err) = as_operator(&["migrate"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("3 tenant schema(s) brought to the latest tenant-schema step"),
        "{out}"
    );
    let (ok, out, err) = as_operator(&["doctor"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = as_operator(&["migrate"]);
    assert!(
        ok && !out.contains("tenant schema(s)"),
        "nothing left: {out}"
    );
    let indexes: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'resources_tenant_updated_idx'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 4, "the pooled table and the three schemas");
}

#[tokio::test]
async fn top_shows_the_busiest_tenants_of_a_running_server_and_refuses_a_wrong_token() {
    let db = TestDatabase::new().await;
    let acme = json(&db, &["tenant", "create", "acme", "--json"]);
    let acme_id = acme[0]["tenant_id"].as_str().unwrap().to_owned();
    let key = json(&db, &["key", "create", &acme_id, "--json"]);
    let secret = key["key"].as_str().unwrap().to_owned();
    let (mut child, addr, _stdout) = spawn_serve(&db, std::process::Stdio::null());
    for _ in 0..3 {
        let r = http_get_with(&addr, "/v1/resources", Some(&secret));
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let url = format!("http://{addr}");
    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["top", "--once", "--url", &url])
            .env("TENANTRY_ADMIN_TOKEN", "tadm_test"),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme_line = table
        .lines()
        .find(|l| l.starts_with(&acme_id))
        .unwrap_or_else(|| panic!("acme is listed:\n{table}"));
    let columns: Vec<&str> = acme_line.split_whitespace().collect();
    assert_eq!(columns[2], "3", "three requests counted: {acme_line}");
    assert!(
        table.contains("TENANT") && table.contains("\nother"),
        "{table}"
    );

    // Refreshing into a pipe: plain frames, no terminal escape codes.
    // Interrupted once two frames are out (a fixed 900 ms was too short for
    // a loaded machine to start it and fetch twice).
    let mut piped = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["top", "--interval", "0.2", "--url", &url])
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    let stdout = piped.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut frames = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while frames.matches("TENANT").count() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match read.recv_timeout(left) {
            Ok(line) => frames.push_str(&line),
            Err(_) => panic!("not two frames within 30 s: {frames}"),
        }
        frames.push('\n');
    }
    assert!(Command::new("kill")
        .args(["-INT", &piped.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(
        piped.wait().unwrap().success(),
        "an interrupt ends it cleanly"
    );
    reader.join().unwrap();
    frames.extend(read.try_iter().map(|l| l + "\n"));
    assert!(!frames.contains('\x1b'), "{frames:?}");

    let out = output_within_a_minute(
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args([
                "top",
                "--once",
                "--url",
                &url,
                "--admin-token",
                "tadm_wrong",
            ])
            .env_remove("TENANTRY_ADMIN_TOKEN"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn commands_on_the_embedded_default_print_no_error_when_they_stop_their_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("TENANTRY_CONTEXT_KEY")
            .env("TENANTRY_DATA_DIR", &data)
            .output()
            .expect("running tenantry")
    };
    // migrate makes the cluster; the others use it and make none.
    for args in [
        &["migrate"][..],
        &["context-key"],
        &["table", "list"],
        &["doctor"],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(!err.contains("ERROR"), "{args:?} printed an error: {err}");
    }
}

/// Without DATABASE_URL, a command that reads or changes what is there
/// refuses a data directory that holds no cluster (a mistyped --data-dir
/// made a new, empty one and listed no tenants, as if they were gone), and
/// makes nothing there; the settings file `tenantry serve` runs with
/// (`--config` or TENANTRY_CONFIG) points the other commands at its
/// database, below flags and environment variables.
#[tokio::test]
async fn commands_refuse_a_data_dir_without_a_cluster_and_take_the_database_from_the_settings_file()
{
    let db = TestDatabase::new().await;
    let acme = json(&db, &["tenant", "create", "acme-from-file", "--json"]);
    let acme_id = acme[0]["tenant_id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-cluster-here");
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env_remove("TENANTRY_CONTEXT_KEY")
            .env_remove("TENANTRY_DATA_DIR")
            .env_remove("TENANTRY_CONFIG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        output_within_a_minute(&mut cmd)
    };

    for args in [
        &["tenant", "list", "--data-dir", missing.to_str().unwrap()][..],
        &["doctor", "--data-dir", missing.to_str().unwrap()][..],
        &[
            "context-key",
            "list",
            "--data-dir",
            missing.to_str().unwrap(),
        ][..],
    ] {
        let out = run(args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("there is no embedded cluster in") && err.contains("set DATABASE_URL"),
            "{args:?}: {err}"
        );
    }
    assert!(!missing.exists(), "a refused command made the directory");

    let file = dir.path().join("tenantry.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\ncontext_key = \"{}\"\n",
            db.server_url(),
            db.context_key().expose()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for (args, envs) in [
        (
            &["tenant", "show", &acme_id, "--json"][..],
            &[("TENANTRY_CONFIG", file)][..],
        ),
        (
            &["tenant", "show", &acme_id, "--json", "--config", file][..],
            &[][..],
        ),
        // Variables set but empty count as unset, as for serve.
        (
            &["tenant", "show", &acme_id, "--json"][..],
            &[
                ("TENANTRY_CONFIG", file),
                ("DATABASE_URL", ""),
                ("TENANTRY_CONTEXT_KEY", ""),
            ][..],
        ),
    ] {
        let out = run(args, envs);
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{args:?}: {err}");
        // One object, the tenant (README: `tenant show` prints one object).
        let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(shown["name"], "acme-from-file", "{args:?}: {stdout}");
    }
    // A flag wins over the file: this data directory holds no cluster.
    let out = run(
        &["tenant", "list", "--config", file, "--database-url", ""],
        &[("TENANTRY_DATA_DIR", missing.to_str().unwrap())],
    );
    assert!(!out.status.success());
    // A misspelt key is refused as serve refuses it, not ignored (the
    // command went to the embedded cluster instead of the file's database).
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, format!("databse_url = \"{}\"\n", db.server_url())).unwrap();
    let out = run(&["tenant", "list", "--config", typo.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("typo.toml") && err.contains("unknown field `databse_url`"),
        "{err}"
    );
}

/// `tenant list` pages by id with `--after` (there was no way past the
/// first 10,000), and a limit outside 1 to 10000 is refused, not bent.
#[tokio::test]
async fn tenant_list_pages_with_after_and_refuses_a_limit_out_of_range() {
    let db = TestDatabase::new().await;
    for name in ["p1", "p2", "p3"] {
        json(&db, &["tenant", "create", name, "--json"]);
    }
    let ids = |v: serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let all = ids(json(&db, &["tenant", "list", "--json"]));
    assert!(all.len() >= 3);
    let first = ids(json(&db, &["tenant", "list", "--limit", "2", "--json"]));
    assert_eq!(first, all[..2]);
    let rest = ids(json(
        &db,
        &["tenant", "list", "--after", &first[1], "--json"],
    ));
    assert_eq!(rest, all[2..]);
    for limit in ["0", "10001"] {
        let (ok, _, err) = tenantry(&db, &["tenant", "list", "--limit", limit]);
        assert!(!ok && err.contains("--limit"), "{limit}: {err}");
    }
}

/// `--version` names the schema the build migrates to, so that two builds
/// of one package version can be told apart (found by an upgrade review).
#[test]
fn the_version_names_the_schema_this_build_migrates_to() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let newest = tenantry_db::migrate::migrations().last().unwrap().version;
    assert!(
        text.starts_with(&format!(
            "tenantry {} (schema {newest:04}, definitions ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}
