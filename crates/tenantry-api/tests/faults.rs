//! Faults under a running server: PostgreSQL restarted under write load. Requests during the outage answer 503 problem+json at once, the server recovers by itself when the database returns, and every write that got a 2xx survives.
//!
//! The test owns its embedded cluster (not the harness's shared one) so it can stop and start it.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tenantry_api::config::AdminToken;
use tenantry_db::{provision, Database, DatabaseConfig, ServerLogin};
use tenantry_embedded::{temp_data_dir, ClusterOptions, EmbeddedCluster};

#[path = "common/server.rs"]
mod server;
use server::{test_settings, Server};

const WRITERS: usize = 8;
const TENANTS: usize = 4;
const DB_NAME: &str = "faults";

/// One request of the load and what came back.
#[derive(Debug, Clone)]
struct Sample {
    start: Instant,
    end: Instant,
    /// None: no response at all (transport error or client timeout).
    status: Option<u16>,
    /// A problem+json body whose code matches a 503 (checked for every non-2xx).
    problem_code: Option<String>,
    content_type: String,
    /// The created resource's id (2xx).
    id: Option<String>,
    /// The `X-Request-Id` it was sent with.
    request_id: String,
    error: Option<String>,
}

fn cluster_options(dir: &std::path::Path) -> ClusterOptions {
    let mut options = ClusterOptions::new(dir);
    // A clean restart loses nothing even without fsync (the OS keeps the files);
    // synchronous_commit stays on: a 2xx means the commit reached the WAL.
    options.extra_settings.push(("fsync".into(), "off".into()));
    options
}

async fn superuser(cluster: &EmbeddedCluster, db: &str) -> tokio_postgres::Client {
    let (client, conn) = cluster
        .superuser_config(db)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("superuser connection to the test cluster");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    request_id: String,
) -> Sample {
    let start = Instant::now();
    let result = client
        .post(url)
        .bearer_auth(token)
        .header("x-request-id", &request_id)
        .json(body)
        .send()
        .await;
    let mut sample = Sample {
        start,
        end: start,
        status: None,
        problem_code: None,
        content_type: String::new(),
        id: None,
        request_id,
        error: None,
    };
    match result {
        Ok(r) => {
            sample.status = Some(r.status().as_u16());
            sample.content_type = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            match r.text().await {
                Ok(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    sample.id = v["id"].as_str().map(str::to_owned);
                    sample.problem_code = v["code"].as_str().map(str::to_owned);
                }
                Err(e) => sample.error = Some(format!("reading the body: {e}")),
            }
        }
        Err(e) => sample.error = Some(e.to_string()),
    }
    sample.end = Instant::now();
    sample
}

/// Server warnings and errors go to the test output (shown for a failing test).
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How PostgreSQL goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `pg_ctl stop -m fast`: connections terminated, shutdown checkpoint.
    Fast,
    /// SIGQUIT to the postmaster (`-m immediate`): no checkpoint, crash recovery on start.
    Crash,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_write_load_gives_fast_503s_then_recovers_and_keeps_every_acknowledged_write(
) {
    restart_under_write_load(Stop::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashing_under_write_load_gives_fast_503s_then_recovers_and_keeps_every_acknowledged_write(
) {
    restart_under_write_load(Stop::Crash).await;
}

async fn restart_under_write_load(how: Stop) {
    log_to_test_output();
    let dir = temp_data_dir("tenantry-faults").expect("a temporary data directory");
    let mut cluster = tokio::task::block_in_place(|| EmbeddedCluster::start(cluster_options(&dir)))
        .expect("starting the test cluster");
    let provisioned = provision(
        &cluster.superuser_config("postgres"),
        DB_NAME,
        ServerLogin::Trust,
    )
    .await
    .expect("creating and migrating the database");

    // The server as `tenantry serve` builds it: the API's settings decide the pool.
    let settings = test_settings();
    let mut config =
        DatabaseConfig::from_config(provisioned.server).with_context_key(provisioned.context_key);
    config.max_connections = settings.max_connections;
    config.acquire_timeout = Duration::from_millis(settings.acquire_timeout_ms);
    let database = Database::connect(&config).expect("pool");
    let admin = AdminToken::generate();
    let mut server = Server::start(&settings, database, &admin).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let mut keys = Vec::new();
    for t in 0..TENANTS {
        let r = client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(&admin)
            .json(&json!({ "name": format!("faults-{t}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let tenant: Value = r.json().await.unwrap();
        let id = tenant["tenant_id"].as_str().unwrap();
        let r = client
            .post(format!("{base}/v1/tenants/{id}/keys"))
            .bearer_auth(&admin)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let key: Value = r.json().await.unwrap();
        keys.push(key["key"].as_str().unwrap().to_owned());
    }

    // Write load until told to stop.
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, samples, running) = (client.clone(), samples.clone(), running.clone());
        let key = keys[w % TENANTS].clone();
        let url = format!("{base}/v1/resources");
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                let body = json!({ "name": format!("w{w}-{n}"), "data": { "n": n } });
                let sample = post(&client, &url, &key, &body, format!("faults-w{w}-{n}")).await;
                // Pace clients that are answered instantly (503) so the outage is sampled, not flooded.
                if sample.status != Some(201) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                samples.lock().unwrap().push(sample);
                n += 1;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stop_begin = Instant::now();
    if how == Stop::Crash {
        let pid = cluster.pid().expect("postmaster running");
        let status = std::process::Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -QUIT {pid} failed");
    }
    // Fast: SIGINT and wait. Crash: the postmaster is already exiting; this reaps it.
    tokio::task::block_in_place(|| cluster.stop()).expect("stopping PostgreSQL");
    let stopped_at = Instant::now();
    drop(cluster);
    // The fast stop's outage outlasts what the request log's writer once
    // retried (about 10 s: the rows of the requests around such an outage
    // were dropped, found by a failure review).
    tokio::time::sleep(Duration::from_secs(match how {
        Stop::Fast => 15,
        Stop::Crash => 2,
    }))
    .await;
    let start_begin = Instant::now();
    let cluster = tokio::task::block_in_place(|| EmbeddedCluster::start(cluster_options(&dir)))
        .expect("restarting PostgreSQL");
    let back_at = Instant::now();

    // Recovery: the stated requirement is a 2xx within 5 s of the database being back.
    let deadline = back_at + Duration::from_secs(5);
    let first_ok = loop {
        let found = samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == Some(201) && s.start >= back_at)
            .map(|s| s.end)
            .min();
        if let Some(t) = found {
            break Some(t);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server
        .stop()
        .await
        .expect("stopped once")
        .expect("server did not stop")
        .unwrap()
        .unwrap();

    let samples = samples.lock().unwrap().clone();
    let first_ok = first_ok.unwrap_or_else(|| {
        panic!(
            "no 2xx within 5 s of PostgreSQL being back; answers since: {:?}",
            samples
                .iter()
                .filter(|s| s.start >= back_at)
                .take(10)
                .collect::<Vec<_>>()
        )
    });

    // Every request got an answer, and every answer is 201 or a 503 problem.
    let no_answer: Vec<&Sample> = samples.iter().filter(|s| s.status.is_none()).collect();
    assert!(
        no_answer.is_empty(),
        "{} requests got no response (hung or dropped): {:?}",
        no_answer.len(),
        &no_answer[..no_answer.len().min(5)]
    );
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| match s.status {
            Some(201) => s.id.is_none(),
            Some(503) => {
                !s.content_type.starts_with("application/problem+json")
                    || s.problem_code.as_deref() != Some("service_unavailable")
            }
            _ => true,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} answers other than 201 or a 503 service_unavailable problem: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let outage: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.start >= stopped_at && s.end <= start_begin)
        .collect();
    assert!(
        !outage.is_empty(),
        "no request fell entirely inside the outage"
    );
    assert!(
        outage.iter().all(|s| s.status == Some(503)),
        "a request answered while PostgreSQL was down was not a 503"
    );

    // Every acknowledged write is there.
    let acknowledged: Vec<uuid::Uuid> = samples
        .iter()
        .filter_map(|s| s.id.as_deref())
        .map(|id| id.parse().unwrap())
        .collect();
    let client = superuser(&cluster, DB_NAME).await;
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.resources WHERE id = ANY($1)",
            &[&acknowledged],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        found as usize,
        acknowledged.len(),
        "acknowledged writes missing after the restart"
    );
    // Every write acknowledged before the outage has its request-log row
    // (the server's stop flushed the log): the batch the outage caught was
    // retried until the database came back, not dropped. (Rows of the
    // outage's own 503s may overflow the queue, and later ones with them.)
    let before: Vec<String> = samples
        .iter()
        .filter(|s| s.status == Some(201) && s.end <= stop_begin)
        .map(|s| s.request_id.clone())
        .collect();
    assert!(
        !before.is_empty(),
        "no write acknowledged before the outage"
    );
    let logged: i64 = client
        .query_one(
            "SELECT count(DISTINCT request_id) FROM tenantry.request_log WHERE status = 201 AND request_id = ANY($1)",
            &[&before],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        logged as usize,
        before.len(),
        "request-log rows of acknowledged writes lost across the outage"
    );

    let mut outage_ms: Vec<f64> = outage.iter().map(|s| millis(s.end - s.start)).collect();
    outage_ms.sort_by(f64::total_cmp);
    let during_stop = samples
        .iter()
        .filter(|s| s.end >= stop_begin && s.start <= stopped_at)
        .count();
    let answered_503 = samples.iter().filter(|s| s.status == Some(503)).count();
    // Each 503 counted by its cause, the outage's as the database's (the
    // process's counter: other tests of this binary only add to it).
    let unavailable = |cause: &str| -> usize {
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix("tenantry_unavailable_total{"))
            .filter(|l| cause.is_empty() || l.starts_with(&format!("cause=\"{cause}\"}}")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize)
            .sum()
    };
    assert!(
        unavailable("database") > 0 && unavailable("") >= answered_503,
        "{answered_503} answered 503, counted: {metrics}"
    );
    eprintln!(
        "restart run ({how:?}): {} requests, {} acknowledged (201) and all {} found after the restart; \
         {answered_503} answered 503; PostgreSQL stop took {:.0} ms ({during_stop} requests overlapped it), \
         outage {:.0} ms, restart {:.0} ms; {} requests inside the outage, all 503, latency median {:.1} ms, \
         max {:.1} ms; first 201 {:.0} ms after PostgreSQL was back",
        samples.len(),
        acknowledged.len(),
        found,
        millis(stopped_at - stop_begin),
        millis(start_begin - stopped_at),
        millis(back_at - start_begin),
        outage.len(),
        outage_ms[outage_ms.len() / 2],
        outage_ms[outage_ms.len() - 1],
        millis(first_ok.saturating_duration_since(back_at)),
    );
    drop(client);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Between the server and PostgreSQL: forwards both ways until armed; then,
/// on the first connection that sends `COMMIT` (a simple-query message), it
/// forwards the COMMIT, withholds every reply from then on, and closes the
/// connection once PostgreSQL has answered `COMMIT` (its CommandComplete):
/// the transaction committed, and the server never hears of it, as when a
/// server crashes or the network drops between COMMIT and the reply.
mod cut_after_commit {
    use std::{
        path::PathBuf,
        sync::{
            atomic::{AtomicBool, AtomicUsize, Ordering},
            Arc,
        },
    };

    use tokio::{
        io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
        net::{TcpListener, TcpStream, UnixStream},
    };

    /// Simple query `COMMIT`: 'Q', length 11, the text and its NUL.
    const QUERY_COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
    /// CommandComplete `COMMIT`: 'C', length 11, the tag and its NUL.
    const COMMIT_DONE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";

    /// Where PostgreSQL listens.
    #[derive(Clone)]
    pub enum Upstream {
        Tcp(String),
        Unix(PathBuf),
    }

    trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
    impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

    impl Upstream {
        /// PostgreSQL's address in `config`.
        pub fn of(config: &tokio_postgres::Config) -> Self {
            let port = config.get_ports().first().copied().unwrap_or(5432);
            match &config.get_hosts()[0] {
                tokio_postgres::config::Host::Tcp(host) => Self::Tcp(format!("{host}:{port}")),
                tokio_postgres::config::Host::Unix(dir) => {
                    Self::Unix(dir.join(format!(".s.PGSQL.{port}")))
                }
            }
        }

        async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
            Ok(match self {
                Self::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
                Self::Unix(path) => Box::new(UnixStream::connect(path).await?),
            })
        }
    }

    /// The proxy's switches.
    #[derive(Default)]
    pub struct Cut {
        armed: AtomicBool,
        /// COMMITs that went through to PostgreSQL and whose reply was withheld.
        pub done: AtomicUsize,
    }

    impl Cut {
        /// The next COMMIT any connection sends is cut off after it commits.
        pub fn arm(&self) {
            self.armed.store(true, Ordering::SeqCst);
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Listens on 127.0.0.1:0 and proxies each connection to `upstream`; returns the port.
    pub async fn start(upstream: Upstream, cut: Arc<Cut>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, cut) = (upstream.clone(), cut.clone());
                tokio::spawn(async move {
                    if let Ok(server) = upstream.connect().await {
                        proxy(client, server, cut).await;
                    }
                });
            }
        });
        port
    }

    async fn proxy(client: TcpStream, server: Box<dyn Stream>, cut: Arc<Cut>) {
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = tokio::io::split(server);
        let cutting = Arc::new(AtomicBool::new(false));
        let to_server = {
            let (cut, cutting) = (cut.clone(), cutting.clone());
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                // The previous chunk's tail: a message split across reads is still seen.
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match client_rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut window = std::mem::take(&mut tail);
                    let seen = window.len();
                    window.extend_from_slice(&buf[..n]);
                    // A COMMIT that ends in this chunk (the tail's own was seen before).
                    let new_commit = window
                        .windows(QUERY_COMMIT.len())
                        .enumerate()
                        .any(|(i, w)| w == QUERY_COMMIT && i + QUERY_COMMIT.len() > seen);
                    if new_commit
                        && cut
                            .armed
                            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        // From here on nothing PostgreSQL says reaches the server.
                        cutting.store(true, Ordering::SeqCst);
                    }
                    tail = window[window.len().saturating_sub(QUERY_COMMIT.len() - 1)..].to_vec();
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        };
        let to_client = async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut withheld: Vec<u8> = Vec::new();
            loop {
                let n = match server_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if cutting.load(Ordering::SeqCst) {
                    withheld.extend_from_slice(&buf[..n]);
                    if contains(&withheld, COMMIT_DONE) {
                        // Committed; the server's connection is dropped unanswered.
                        cut.done.fetch_add(1, Ordering::SeqCst);
                        let _ = client_tx.shutdown().await;
                        return;
                    }
                    continue;
                }
                if client_tx.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        // Whichever direction ends first ends the connection (both halves dropped).
        tokio::select! {
            () = to_server => {}
            () = to_client => {}
        }
    }
}

/// A resource created through a server whose database connection goes
/// through the cutting proxy; returns the answer to the cut request and to
/// its retry, and how many resources named `name` exist afterwards.
async fn create_cut_after_commit_then_retry(
    idempotency_key: Option<&str>,
    name: &str,
) -> (u16, Option<String>, u16, bool, String, i64) {
    use tenantry_db::testing::TestDatabase;

    let db = TestDatabase::new().await;
    let cut = Arc::new(cut_after_commit::Cut::default());
    let upstream = cut_after_commit::Upstream::of(&db.server_config());
    let port = cut_after_commit::start(upstream, cut.clone()).await;
    let original = db.server_config();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(original.get_user().unwrap())
        .dbname(original.get_dbname().unwrap());
    if let Some(password) = original.get_password() {
        config.password(password);
    }
    let database = Database::connect(
        &DatabaseConfig::from_config(config).with_context_key(db.context_key().clone()),
    )
    .expect("pool");
    let mut settings = test_settings();
    // Only the request's own transaction commits through the proxy: no
    // request-log batches, and the key stays cached after the first request.
    settings.request_log = false;
    settings.key_cache_ttl_ms = 600_000;
    let admin = AdminToken::generate();
    let mut server = Server::start(&settings, database, &admin).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = server.base.clone();
    let tenant: Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "cut" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: Value = client
        .post(format!(
            "{base}/v1/tenants/{}/keys",
            tenant["tenant_id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let warm = client
        .get(format!("{base}/v1/resources"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200, "the key is verified and cached");

    let send = || {
        let mut req = client
            .post(format!("{base}/v1/resources"))
            .bearer_auth(&key)
            .json(&json!({ "name": name, "data": { "amount": 100 } }));
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        req.send()
    };
    cut.arm();
    let lost = send().await.unwrap();
    let lost_status = lost.status().as_u16();
    let lost_code = lost.json::<Value>().await.unwrap()["code"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(
        cut.done.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the request's COMMIT reached PostgreSQL and its reply was withheld"
    );
    let retry = send().await.unwrap();
    let retry_status = retry.status().as_u16();
    let replayed = retry.headers().get("idempotent-replayed").is_some();
    let retry_body = retry.text().await.unwrap();
    let su = db.superuser_client().await;
    let count: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.resources WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    let _ = server.stop().await;
    (
        lost_status,
        lost_code,
        retry_status,
        replayed,
        retry_body,
        count,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_commit_then_a_retry_with_the_same_key_writes_once_and_replays_the_first_response(
) {
    log_to_test_output();
    let (lost, code, retry, replayed, body, count) =
        create_cut_after_commit_then_retry(Some("payment-7"), "cut-with-key").await;
    assert_eq!(
        (lost, code.as_deref()),
        (503, Some("service_unavailable")),
        "the server cannot know the COMMIT went through"
    );
    assert_eq!(count, 1, "exactly one write");
    assert_eq!(retry, 201, "{body}");
    assert!(replayed, "the retry is the stored response: {body}");
    let resource: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resource["name"], "cut-with-key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_commit_then_a_retry_without_a_key_writes_twice() {
    // What the key prevents: the same cut without it duplicates the write.
    let (lost, _, retry, replayed, _, count) =
        create_cut_after_commit_then_retry(None, "cut-without-key").await;
    assert_eq!((lost, retry, replayed), (503, 201, false));
    assert_eq!(count, 2);
}
