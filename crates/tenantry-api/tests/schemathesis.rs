//! Schemathesis (`--checks all`, short form) against the server's own `/openapi.json`: one run with a tenant key over the tenant routes, one with a second key of that tenant over the key routes, one with the admin token over the admin, operator and system routes; any failure fails the test, and so does an operation that got nothing but 401 or 403 where its credential may call it.
//!
//! The server is the real `Application` on port 0 over a fresh test database, seeded with a
//! tenant, its key, resources, a share, a member, a role and a child. What `--checks all`
//! cannot apply to this API is configured, each with its reason, in `scripts/schemathesis.toml`
//! (shared with `scripts/schemathesis.sh`, the longer run).
//!
//! `st` is `$TENANTRY_SCHEMATHESIS`, else `target/pytools/bin/st` (the venv that `.ci/run`
//! creates with the pinned version); without it this test fails, it never passes silently.
//! `TENANTRY_SCHEMATHESIS_EXAMPLES` (default 10) and `TENANTRY_SCHEMATHESIS_SEED` (default 1)
//! adjust the run.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tenantry_api::config::AdminToken;
use tenantry_db::testing::TestDatabase;

#[path = "common/server.rs"]
mod server;
use server::{test_settings, Server};

const ST_VERSION: &str = "4.32.5";
/// The operations of the tenant run that a tenant key may not call, whose
/// only answers are 401 or 403 by design: a person's own routes and the
/// operator's.
const NOT_FOR_KEYS: [&str; 6] = [
    "GET /v1/me/tenants",
    "POST /v1/me/tenants",
    "POST /v1/invitations/accept",
    "GET /v1/stats/tenants",
    "GET /v1/usage/top",
    "GET /v1/operator/audit",
];
/// Each run is killed (and fails) after this long.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The schemathesis CLI: `$TENANTRY_SCHEMATHESIS`, else `target/pytools/bin/st`; checked to be the pinned version.
fn schemathesis() -> PathBuf {
    let install = format!(
        "python3 -m venv target/pytools && target/pytools/bin/pip install schemathesis=={ST_VERSION} \
         (from the workspace root; .ci/run does this), or point TENANTRY_SCHEMATHESIS at a schemathesis \
         {ST_VERSION} `st` binary"
    );
    let bin = std::env::var_os("TENANTRY_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/pytools/bin/st"));
    assert!(
        bin.is_file(),
        "schemathesis is not installed at {}, and this test needs it: {install}",
        bin.display()
    );
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.trim().ends_with(ST_VERSION),
        "{} is {:?}, but scripts/schemathesis.toml is written for schemathesis {ST_VERSION}: {install}",
        bin.display(),
        version.trim()
    );
    bin
}

/// The operations schemathesis warns got only 401 or 403 answers (its
/// "Authentication failed" warning), as `METHOD /path`.
fn only_refused(output: &str) -> Vec<&str> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("Authentication failed:"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('\u{1f4a1}') && !l.starts_with("==="))
        .filter_map(|l| l.strip_prefix("  - "))
        .map(str::trim)
        .collect()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
        })
        .unwrap_or(default)
}

/// POSTs JSON; panics unless the answer is 2xx; returns the body.
async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let r = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "seeding: POST {url} answered {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Runs `st run` against `base` with `auth` and `filters`; returns (passed, output).
async fn run(
    st: &Path,
    base: &str,
    tenant: &str,
    auth: &str,
    filters: &[&str],
    examples: u64,
    seed: u64,
) -> (bool, String) {
    // Schemathesis keeps a .schemathesis/ cache in its working directory: a scratch one.
    let work = std::env::temp_dir().join(format!(
        "tenantry-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&work).expect("scratch directory");
    let mut cmd = tokio::process::Command::new(st);
    cmd.arg("--config-file")
        .arg(workspace_root().join("scripts/schemathesis.toml"))
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        // ensure_resource_availability: see the end of scripts/schemathesis.toml.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "ensure_resource_availability",
        ])
        .args([
            "--max-examples",
            &examples.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        // One worker: with two, Python 3.11 before 3.11.8 can fail inside ast.parse.
        .args(["--workers", "1", "--request-timeout", "10", "--no-color"])
        .args([
            "--generation-database",
            "none",
            "--suppress-health-check",
            "all",
        ])
        .args(["--header", &format!("Authorization: Bearer {auth}")])
        // X-Tenant-Id: the seeded tenant's (scripts/schemathesis.toml, [parameters]).
        .env("TENANTRY_ST_TENANT_ID", tenant)
        .args(filters)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", st.display()));
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_LIMIT:?}"))
        .expect("schemathesis output");
    let _ = std::fs::remove_dir_all(&work);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_checks_all_finds_no_failure_with_a_tenant_key_or_the_admin_token() {
    let st = schemathesis();
    let examples = env_or("TENANTRY_SCHEMATHESIS_EXAMPLES", 10);
    let seed = env_or("TENANTRY_SCHEMATHESIS_SEED", 1);

    let db = TestDatabase::new().await;
    let admin = AdminToken::generate();
    let mut server = Server::start(&test_settings(), db.database(), &admin).await;
    let base = server.base.clone();

    // Some data, so that reads and listings return real rows.
    let client = reqwest::Client::new();
    let tenant = post(
        &client,
        format!("{base}/v1/tenants"),
        &admin,
        json!({"name": "schemathesis"}),
    )
    .await;
    let tenant = tenant["tenant_id"].as_str().expect("tenant_id").to_owned();
    let other = post(
        &client,
        format!("{base}/v1/tenants"),
        &admin,
        json!({"name": "other"}),
    )
    .await;
    let other = other["tenant_id"].as_str().expect("tenant_id").to_owned();
    let key = post(
        &client,
        format!("{base}/v1/tenants/{tenant}/keys"),
        &admin,
        json!({"description": "schemathesis"}),
    )
    .await;
    let key = key["key"].as_str().expect("key").to_owned();
    let mut resource = String::new();
    for i in 1..=3 {
        let r = post(
            &client,
            format!("{base}/v1/resources"),
            &key,
            json!({"name": format!("r{i}"), "data": {"n": i}}),
        )
        .await;
        resource = r["id"].as_str().expect("id").to_owned();
    }
    post(
        &client,
        format!("{base}/v1/resources/{resource}/shares"),
        &key,
        json!({"tenant_id": other}),
    )
    .await;
    post(
        &client,
        format!("{base}/v1/members"),
        &key,
        json!({"email": "a@example.com", "display_name": "A"}),
    )
    .await;
    post(
        &client,
        format!("{base}/v1/roles"),
        &key,
        json!({"name": "reader", "description": "reads"}),
    )
    .await;
    post(
        &client,
        format!("{base}/v1/tenants"),
        &key,
        json!({"name": "child"}),
    )
    .await;

    // The key routes get a key of their own: schemathesis finds the id of the
    // key it calls with and rotates it with `grace_seconds: 0` or revokes it,
    // after which every request of its run is a 401 (in a run that shared
    // the key, that was 2,500 of 4,000 requests, testing nothing).
    let keys_key = post(
        &client,
        format!("{base}/v1/tenants/{tenant}/keys"),
        &admin,
        json!({"description": "schemathesis keys"}),
    )
    .await;
    let keys_key = keys_key["key"].as_str().expect("key").to_owned();

    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, auth, filters) in [
        // Tenant routes with the tenant key (POST /v1/tenants: a child of the key's tenant),
        // but the two that end the key itself.
        (
            "tenant",
            key.as_str(),
            &[
                "--exclude-path-regex",
                "^/v1/tenants/|^/(healthz|readyz|metrics)$",
                "--exclude-operation-id",
                "list_tenants",
                "--exclude-operation-id",
                "rotate_key",
                "--exclude-operation-id",
                "revoke_key",
            ][..],
        ),
        // The key routes, with their own key of the same tenant.
        (
            "keys",
            keys_key.as_str(),
            &["--include-path-regex", "^/v1/keys"][..],
        ),
        // Admin routes, the operator's and the system routes with the admin token.
        (
            "admin",
            admin.as_str(),
            &[
                "--include-path-regex",
                "^/v1/(tenants|usage/top|stats/tenants|operator/audit|impersonations)|^/(healthz|readyz|metrics)$",
            ][..],
        ),
    ] {
        let t = Instant::now();
        let (passed, output) = run(&st, &base, &tenant, auth, filters, examples, seed).await;
        let summary = output
            .lines()
            .rev()
            .find(|l| l.starts_with("===") && l.contains(" in "))
            .unwrap_or("(no summary line)")
            .to_owned();
        eprintln!("[{name}] {summary} ({:.1?})", t.elapsed());
        let tested = output
            .lines()
            .find_map(|l| l.trim().strip_prefix("Tested:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if !passed || tested == 0 {
            failed.push(format!(
                "=== {name} run (--checks all, seed {seed}, {examples} examples, {tested} operations tested):\n{output}"
            ));
        }
        let locked_out: Vec<&str> = only_refused(&output)
            .into_iter()
            .filter(|op| !NOT_FOR_KEYS.contains(op))
            .collect();
        if !locked_out.is_empty() {
            failed.push(format!(
                "=== {name} run: these operations got nothing but 401 or 403, so they were not tested \
                 (did the run end its own credential?): {locked_out:?}\n{output}"
            ));
        }
    }
    eprintln!("schemathesis: all runs in {:.1?}", started.elapsed());

    let _ = server.stop().await;
    assert!(
        failed.is_empty(),
        "schemathesis --checks all found failures (fix the server or the OpenAPI document; a check that \
         cannot apply goes into scripts/schemathesis.toml with its reason). Reproduce with \
         TENANTRY_SCHEMATHESIS_SEED={seed}, or run scripts/schemathesis.sh:\n{}",
        failed.join("\n")
    );
}

/// The warning's shape in schemathesis 4.32.5, as a run printed it.
#[test]
fn only_refused_reads_the_operations_of_schemathesis_authentication_warning() {
    let output = "=== WARNINGS ===\n\nAuthentication failed: 3 operations returned only 401/403 responses\n\n\
                  403 Forbidden (1 operations):\n  - GET /v1/usage/top\n401 Unauthorized (2 operations):\n  \
                  - DELETE /v1/keys/{key_id}\n  - GET /v1/resources/{id}\n\n\u{1f4a1} Ensure valid \
                  authentication credentials are set\n\nMissing test data: 1 operation\n  - GET /v1/x\n";
    assert_eq!(
        only_refused(output),
        [
            "GET /v1/usage/top",
            "DELETE /v1/keys/{key_id}",
            "GET /v1/resources/{id}"
        ]
    );
    assert!(only_refused("=== 10 passed in 1.0s ===").is_empty());
}
