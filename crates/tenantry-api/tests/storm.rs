//! The storm of issue 10, finding 1, over HTTP through the real server: four tenants create children as fast as they are allowed (their `child_creation_rate_per_second`, 10 by default: a 429 with Retry-After says when to go on) while other tenants read and write. Nobody gets a 5xx, tenants at a limit get 409 `quota_exceeded`, and the bystanders' latency during the storm is measured against a quiet run of the same test and reported (p50, p99, ratio).
//!
//! `TENANTRY_STORM_SECS` sets the length of each phase (quiet, then storm) in
//! seconds: default 2, so CI stays fast; a long run uses 30 or more. The p99
//! ratio is reported, and asserted only against a generous bound
//! (`TENANTRY_STORM_MAX_P99_RATIO`, default 10, the quiet p99 taken as at
//! least 20 ms): on two shared cores the
//! attackers' CPU alone slows everyone, so the bound catches a bystander that
//! waits on an attacker's lock (seconds), not scheduling noise.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tenantry_api::config::AdminToken;
use tenantry_db::testing::TestDatabase;

#[path = "common/server.rs"]
mod server;
use server::{test_settings, Server};

/// Tenants creating children.
const ATTACKERS: usize = 4;
/// Tenants reading and writing their own resources meanwhile.
const BYSTANDERS: usize = 4;
/// Pause between two requests of one bystander: modest users, not a load test.
const BYSTANDER_PACE: Duration = Duration::from_millis(5);

fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        Err(_) => default,
    }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request failed");
    let status = r.status().as_u16();
    let text = r.text().await.expect("reading the body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What one phase of bystander traffic saw.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    /// (status, body) of every answer that was not a 2xx.
    failures: Vec<(u16, Value)>,
}

impl Seen {
    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        let rank = ((v.len() as f64) * p).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One bystander: reads one of its resources, then writes a new one, and
/// again, until `stop`.
async fn bystander(
    client: reqwest::Client,
    base: String,
    key: String,
    resource: String,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let req = if n % 2 == 0 {
            client
                .get(format!("{base}/v1/resources/{resource}"))
                .bearer_auth(&key)
        } else {
            client
                .post(format!("{base}/v1/resources"))
                .bearer_auth(&key)
                .json(&json!({ "name": format!("w{n}"), "data": { "n": n } }))
        };
        let started = Instant::now();
        let (status, body) = send(req).await;
        seen.latencies.push(started.elapsed());
        if !(200..300).contains(&status) {
            seen.failures.push((status, body));
        }
        tokio::time::sleep(BYSTANDER_PACE).await;
    }
    seen
}

/// What the attackers got: (created, refused with 409 quota_exceeded, throttled
/// with 429 rate_limited, anything else).
type Outcome = (u64, u64, u64, Vec<(u16, Value)>);

/// One attacker: creates children back to back until `stop`, as fast as the
/// server allows (a 429 says how long to wait: Retry-After); counts itself in
/// `limited` at its first 409.
async fn attacker(
    client: reqwest::Client,
    base: String,
    key: String,
    stop: Arc<AtomicBool>,
    limited: Arc<AtomicUsize>,
) -> Outcome {
    let (mut created, mut refused, mut throttled, mut other) = (0, 0, 0, Vec::new());
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(&key)
            .json(&json!({ "name": format!("child-{n}") }))
            .send()
            .await
            .expect("request failed");
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value =
            serde_json::from_str(&r.text().await.expect("reading the body")).unwrap_or(Value::Null);
        match status {
            201 => created += 1,
            409 if body["code"] == "quota_exceeded" => {
                if refused == 0 {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
                refused += 1;
            }
            429 if body["code"] == "rate_limited" && retry_after.is_some() => {
                throttled += 1;
                tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
            }
            _ => other.push((status, body)),
        }
    }
    (created, refused, throttled, other)
}

/// Runs the bystanders (and, for the storm, the attackers) for `length`, and
/// on until `must_reach_limit` attackers got a 409 (at most a minute more:
/// a slow machine must not make the limits look unreached). Also samples
/// `pg_stat_activity` for backends waiting on a lock; returns what waited.
async fn phase(
    client: &reqwest::Client,
    base: &str,
    bystanders: &[(String, String)],
    attackers: &[String],
    length: Duration,
    must_reach_limit: usize,
    su: &tokio_postgres::Client,
) -> (Seen, Vec<Outcome>, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(AtomicUsize::new(0));
    let attacks: Vec<_> = attackers
        .iter()
        .map(|key| {
            tokio::spawn(attacker(
                client.clone(),
                base.to_owned(),
                key.clone(),
                stop.clone(),
                limited.clone(),
            ))
        })
        .collect();
    let watches: Vec<_> = bystanders
        .iter()
        .map(|(key, resource)| {
            tokio::spawn(bystander(
                client.clone(),
                base.to_owned(),
                key.clone(),
                resource.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let mut waits = Vec::new();
    while started.elapsed() < length
        || (limited.load(Ordering::Relaxed) < must_reach_limit
            && started.elapsed() < length + Duration::from_secs(60))
    {
        for row in su
            .query(
                "SELECT wait_event || ': ' || left(query, 80) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND datname = current_database()",
                &[],
            )
            .await
            .expect("sampling pg_stat_activity")
        {
            waits.push(row.get(0));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for w in watches {
        let s = w.await.expect("a bystander panicked");
        seen.latencies.extend(s.latencies);
        seen.failures.extend(s.failures);
    }
    let mut outcomes = Vec::new();
    for a in attacks {
        outcomes.push(a.await.expect("an attacker panicked"));
    }
    (seen, outcomes, waits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_tenants_creating_children_as_fast_as_allowed_give_nobody_a_5xx_and_their_limits_answer_409(
) {
    let length = Duration::from_secs_f64(env_number("TENANTRY_STORM_SECS", 2.0));
    let max_ratio = env_number("TENANTRY_STORM_MAX_P99_RATIO", 10.0);

    let db = TestDatabase::new().await;
    let admin = AdminToken::generate();
    let mut server = Server::start(&test_settings(), db.database(), &admin).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Two attackers have the default limits and soon get 409s; two were
    // given room by their operator and create children all along.
    let mut attackers = Vec::new();
    for a in 0..ATTACKERS {
        let settings = if a < 2 {
            json!({})
        } else {
            json!({ "max_children": 1_000_000, "max_descendants": 1_000_000 })
        };
        attackers
            .push(tenant_key(&client, &base, &admin, &format!("attacker-{a}"), settings).await);
    }
    let mut bystanders = Vec::new();
    for b in 0..BYSTANDERS {
        let key = tenant_key(&client, &base, &admin, &format!("bystander-{b}"), json!({})).await;
        let (status, body) = send(
            client
                .post(format!("{base}/v1/resources"))
                .bearer_auth(&key)
                .json(&json!({ "name": "read me" })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        bystanders.push((key, body["id"].as_str().unwrap().to_owned()));
    }

    // Warm up the server's pool and caches, then the two phases.
    let su = db.superuser_client().await;
    let warm_up = Duration::from_millis(300);
    phase(&client, &base, &bystanders, &[], warm_up, 0, &su).await;
    let (quiet, _, _) = phase(&client, &base, &bystanders, &[], length, 0, &su).await;
    let (storm, outcomes, waits) =
        phase(&client, &base, &bystanders, &attackers, length, 2, &su).await;

    let (q50, q99, s50, s99) = (
        quiet.percentile(0.50),
        quiet.percentile(0.99),
        storm.percentile(0.50),
        storm.percentile(0.99),
    );
    // Against a quiet p99 of at least 20 ms: a few milliseconds quiet and a
    // few dozen under the attackers' CPU is the scheduling noise the bound
    // is not about (it failed so on a loaded machine); a wait on an
    // attacker's lock (seconds) is still many times over it.
    let ratio = ms(s99) / ms(q99).max(20.0);
    let created: u64 = outcomes.iter().map(|o| o.0).sum();
    let refused: u64 = outcomes.iter().map(|o| o.1).sum();
    let throttled: u64 = outcomes.iter().map(|o| o.2).sum();
    println!(
        "storm of {ATTACKERS} tenants creating children, at least {length:?} per phase, 2 worker threads:\n  \
         bystanders quiet: {} requests, p50 {:.2} ms, p99 {:.2} ms\n  \
         bystanders storm: {} requests, p50 {:.2} ms, p99 {:.2} ms\n  \
         p99 storm/quiet: {ratio:.2} (p50 {:.2})\n  \
         attackers: {created} children created, {refused} refused with 409 quota_exceeded, {throttled} told to wait with 429 rate_limited\n  \
         backends seen waiting on a lock during the storm (sampled every 20 ms): {} {:?}",
        quiet.latencies.len(),
        ms(q50),
        ms(q99),
        storm.latencies.len(),
        ms(s50),
        ms(s99),
        ms(s50) / ms(q50),
        waits.len(),
        waits.iter().take(5).collect::<Vec<_>>(),
    );

    assert!(
        quiet.failures.is_empty() && storm.failures.is_empty(),
        "bystanders got errors: quiet {:?}, storm {:?}",
        quiet.failures,
        storm.failures
    );
    for (a, (created, refused, _, other)) in outcomes.iter().enumerate() {
        assert!(
            other.is_empty(),
            "attacker {a} got answers other than 201/409/429: {other:?}"
        );
        assert!(*created > 0, "attacker {a} created nothing");
        if a < 2 {
            assert_eq!(*created, 100, "attacker {a}: the default max_children");
            assert!(*refused > 0, "attacker {a} never reached its limit");
        }
    }
    assert!(
        ratio <= max_ratio,
        "bystanders' p99 grew {ratio:.1}× during the storm (bound {max_ratio}×)"
    );

    let _ = server.stop().await;
}

/// A tenant made by the operator with `settings`, and a key of it.
async fn tenant_key(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    name: &str,
    settings: Value,
) -> String {
    let (status, body) = send(
        client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(admin)
            .json(&json!({ "name": name, "settings": settings })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["tenant_id"].as_str().unwrap().to_owned();
    let (status, body) = send(
        client
            .post(format!("{base}/v1/tenants/{id}/keys"))
            .bearer_auth(admin)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}
