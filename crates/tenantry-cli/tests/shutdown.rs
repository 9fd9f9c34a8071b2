//! SIGTERM under load: the real `tenantry serve` is stopped while many requests are in flight, and every request that got a response has its request-log row.
//!
//! Requests are matched to rows without any new column: each request addresses a resource id
//! of its own (a POST's created id, or a GET of a fresh random id, answered 404), which the
//! request log records with the tenant, method, route and status.

use std::{
    collections::HashMap,
    io::{BufRead, Read},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tenantry_db::testing::TestDatabase;

const TENANTS: usize = 6;
const CLIENTS: usize = 32;

/// What one answered request must have left in `tenantry.request_log`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Expected {
    tenant_id: uuid::Uuid,
    method: String,
    route: String,
    status: i16,
    resource_id: Option<uuid::Uuid>,
}

/// An answered request and when it was answered.
struct Answered {
    expected: Expected,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_leaves_a_request_log_row_for_every_answered_request() {
    let db = TestDatabase::new().await;
    let admin = "tadm_shutdown_test";
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db.server_url())
        .env("TENANTRY_CONTEXT_KEY", db.context_key().expose())
        .env("TENANTRY_ADMIN_TOKEN", admin)
        .env("TENANTRY_METRICS_REFRESH_SECS", "0")
        .env_remove("TENANTRY_DATA_DIR")
        .env_remove("TENANTRY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tenantry serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(
        first.contains("serving on"),
        "unexpected first line: {first:?}"
    );
    let base = format!("http://{}", first.trim().rsplit("http://").next().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = stdout.read_to_string(&mut s);
        s
    });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let r = client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(admin)
            .json(&json!({ "name": format!("shutdown-{t}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let tenant: Value = r.json().await.unwrap();
        let id: uuid::Uuid = tenant["tenant_id"].as_str().unwrap().parse().unwrap();
        let r = client
            .post(format!("{base}/v1/tenants/{id}/keys"))
            .bearer_auth(admin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let key: Value = r.json().await.unwrap();
        tenants.push((id, key["key"].as_str().unwrap().to_owned()));
    }

    let answered = Arc::new(Mutex::new(Vec::<Answered>::new()));
    let unanswered = Arc::new(Mutex::new(0usize));
    let server_gone = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let (tenant, key) = tenants[c % TENANTS].clone();
        let (client, base) = (client.clone(), base.clone());
        let (answered, unanswered, server_gone) =
            (answered.clone(), unanswered.clone(), server_gone.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !server_gone.load(Ordering::Relaxed) {
                n += 1;
                let (method, route, request, asked) = if n % 2 == 0 {
                    let id = uuid::Uuid::new_v4();
                    (
                        "GET",
                        "/v1/resources/{id}",
                        client.get(format!("{base}/v1/resources/{id}")),
                        Some(id),
                    )
                } else {
                    (
                        "POST",
                        "/v1/resources",
                        client
                            .post(format!("{base}/v1/resources"))
                            .json(&json!({ "name": format!("c{c}-{n}") })),
                        None,
                    )
                };
                let response = match request.bearer_auth(&key).send().await {
                    Ok(r) => r,
                    Err(_) => {
                        // Refused, reset or closed before an answer: not "a request that got
                        // a response". Back off a little; the loop ends when the server is gone.
                        *unanswered.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let status = response.status().as_u16();
                // The status line and headers arrived: that is a response, body or not.
                let at = Instant::now();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let resource_id = match asked {
                    Some(id) => Some(id),
                    None => body["id"].as_str().and_then(|s| s.parse().ok()),
                };
                answered.lock().unwrap().push(Answered {
                    expected: Expected {
                        tenant_id: tenant,
                        method: method.into(),
                        route: route.into(),
                        status: status as i16,
                        resource_id,
                    },
                    at,
                });
            }
        }));
    }

    // Load for a while, then SIGTERM while every client has a request in flight.
    let load_started = Instant::now();
    while answered.lock().unwrap().len() < 300 && load_started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id();
    let sigterm_at = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -TERM {pid} failed");
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .expect("waiting for tenantry serve");
    let exited_at = Instant::now();
    server_gone.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let output = stderr_reader.join().unwrap();
    assert!(
        exit.success(),
        "tenantry serve did not exit cleanly after SIGTERM ({exit:?}):\n{output}"
    );

    // Every answered request has its row (matched as a multiset: rows may also exist for
    // requests whose answer was lost on the wire, never the other way round).
    let superuser = db.superuser_client().await;
    let rows = superuser
        .query(
            "SELECT tenant_id, method, route, status, resource_id FROM tenantry.request_log
              WHERE route LIKE '/v1/resources%'",
            &[],
        )
        .await
        .unwrap();
    let mut logged: HashMap<Expected, usize> = HashMap::new();
    for r in &rows {
        *logged
            .entry(Expected {
                tenant_id: r.get(0),
                method: r.get(1),
                route: r.get(2),
                status: r.get(3),
                resource_id: r.get(4),
            })
            .or_default() += 1;
    }
    let answered = answered.lock().unwrap();
    let mut missing = Vec::new();
    for a in answered.iter() {
        match logged.get_mut(&a.expected) {
            Some(n) if *n > 0 => *n -= 1,
            _ => missing.push(a),
        }
    }
    let after_sigterm = answered.iter().filter(|a| a.at >= sigterm_at).count();
    let mut statuses: HashMap<i16, usize> = HashMap::new();
    for a in answered.iter() {
        *statuses.entry(a.expected.status).or_default() += 1;
    }
    eprintln!(
        "SIGTERM run: {} answered requests ({} answered after SIGTERM, statuses {statuses:?}), \
         {} not answered (refused or closed), {} request-log rows, {} answered requests without a row; \
         SIGTERM to exit {:.0} ms",
        answered.len(),
        after_sigterm,
        unanswered.lock().unwrap(),
        rows.len(),
        missing.len(),
        (exited_at - sigterm_at).as_secs_f64() * 1000.0
    );
    assert!(
        missing.is_empty(),
        "{} answered requests have no request-log row, e.g. {:?}\nserver output:\n{output}",
        missing.len(),
        missing
            .iter()
            .take(5)
            .map(|a| &a.expected)
            .collect::<Vec<_>>()
    );
    assert!(
        answered
            .iter()
            .all(|a| a.expected.resource_id.is_some() || a.expected.status != 201),
        "a 201 without an id cannot be matched"
    );
    assert!(
        after_sigterm > 0,
        "no request was in flight when SIGTERM arrived: the test did not test shutdown"
    );
}
