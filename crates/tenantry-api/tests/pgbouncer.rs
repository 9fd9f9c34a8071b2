//! pgbouncer in transaction pooling between the real server and PostgreSQL: many tenants alternate on a few server connections, and every answer carries only the caller's rows.
//!
//! `TENANTRY_PGBOUNCER_REQUESTS` sets the number of requests (default 5,000; the long run uses
//! ≥ 100,000). pgbouncer must be installed (`apt-get install pgbouncer`): without it this test
//! fails, it never passes silently.

use std::{
    collections::HashSet,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tenantry_api::config::{AdminToken, Secret, Settings};
use tenantry_db::{
    invalidation::APPLICATION_NAME, testing::TestDatabase, Database, DatabaseConfig, StatementMode,
};

#[path = "common/server.rs"]
mod server;
use server::{test_settings, Server};

/// Server connections pgbouncer keeps to PostgreSQL for the test database.
const POOL_SIZE: usize = 3;
/// Connections the tenantry server keeps to pgbouncer (far more than `POOL_SIZE`).
const SERVER_CONNECTIONS: usize = 16;
const TENANTS: usize = 12;
const RESOURCES_PER_TENANT: usize = 4;
const CONCURRENCY: usize = 48;
const PGBOUNCER_PORT: u16 = 6432;

fn find_pgbouncer() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer is not installed, and this test needs it: install it \
                 (Debian/Ubuntu: apt-get install pgbouncer; .ci/run does this) and run again"
            )
        })
}

/// `(uid, gid)` of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect("pgbouncer refuses to run as root and there is no `postgres` system user")
}

/// A pgbouncer process in a private directory (config, auth file, socket, log).
struct PgBouncer {
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    /// Starts pgbouncer in front of the database `db` of `pg` (a libpq connection string whose
    /// host is the cluster's unix socket directory), in transaction pooling with `pool_size`
    /// server connections; waits until its socket accepts connections.
    fn start(pg: &str, db: &str, pool_size: usize) -> Self {
        let binary = find_pgbouncer();
        let cfg: tokio_postgres::Config = pg.parse().expect("harness connection string");
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            None => panic!("the harness URL names no host: {pg}"),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let dir = std::env::temp_dir().join(format!(
            "tenantry-pgbouncer-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).expect("creating pgbouncer's directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Trust is safe here: the only way in is the unix socket in this 0700 directory.
        std::fs::write(dir.join("userlist.txt"), "\"tenantry_server\" \"\"\n").unwrap();
        let ini = format!(
            "[databases]\n\
             {db} = host={host} port={port} dbname={db} pool_size={pool_size}\n\
             [pgbouncer]\n\
             unix_socket_dir = {dir}\n\
             listen_port = {PGBOUNCER_PORT}\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_db_connections = {pool_size}\n\
             max_client_conn = 1000\n\
             logfile = {dir}/pgbouncer.log\n\
             ignore_startup_parameters = extra_float_digits,options\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();

        let mut cmd = Command::new(&binary);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ));
        let root = std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0);
        if root {
            // pgbouncer refuses to run as root; std drops the supplementary groups with the uid.
            let (uid, gid) = postgres_user();
            for entry in std::fs::read_dir(&dir).unwrap() {
                std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
            }
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut bouncer = PgBouncer { child, dir };
        let socket = bouncer.dir.join(format!(".s.PGSQL.{PGBOUNCER_PORT}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = bouncer.child.try_wait().unwrap() {
                panic!(
                    "pgbouncer exited ({status}) before listening:\n{}",
                    bouncer.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 20 s:\n{}",
                bouncer.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// Connection string of `user` on `db` through pgbouncer.
    fn url(&self, db: &str, user: &str) -> String {
        format!(
            "host={} port={PGBOUNCER_PORT} dbname={db} user={user}",
            self.dir.display()
        )
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("pgbouncer.log"))
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

fn requests_wanted() -> u64 {
    match std::env::var("TENANTRY_PGBOUNCER_REQUESTS") {
        Ok(v) => v
            .trim()
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|e| panic!("TENANTRY_PGBOUNCER_REQUESTS={v:?}: {e}")),
        Err(_) => 5_000,
    }
}

struct Tenant {
    id: String,
    key: String,
    /// Ids of its resources.
    resources: HashSet<String>,
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request failed");
    let status = r.status().as_u16();
    let text = r.text().await.expect("reading the body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_alternating_on_few_pgbouncer_connections_see_only_their_own_rows() {
    log_to_test_output();
    let db = TestDatabase::new().await;
    let bouncer = PgBouncer::start(&db.server_url(), db.name(), POOL_SIZE);

    let mut config = DatabaseConfig::new(bouncer.url(db.name(), "tenantry_server"))
        .with_context_key(db.context_key().clone());
    config.statement_mode = StatementMode::Unnamed;
    config.max_connections = SERVER_CONNECTIONS;
    let database = Database::connect(&config).expect("pool through pgbouncer");
    let settings = Settings {
        statement_mode: "unnamed".into(),
        max_connections: SERVER_CONNECTIONS,
        // LISTEN needs a session of its own: PostgreSQL itself, not pgbouncer.
        invalidation_url: Some(Secret::new(db.server_url())),
        ..test_settings()
    };
    let admin = AdminToken::generate();
    let mut server = Server::start(&settings, database, &admin).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    // Ready through pgbouncer: the probe of the context key runs as the app
    // role, which the login does not hold by itself (found by an operations
    // review: /readyz answered 503 behind pgbouncer, always).
    let (s, body) = send(client.get(format!("{base}/readyz"))).await;
    assert_eq!(s, 200, "/readyz through pgbouncer: {body}");

    // Setup through the same path: tenants, keys and resources, all via pgbouncer.
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let (s, body) = send(
            client
                .post(format!("{base}/v1/tenants"))
                .bearer_auth(&admin)
                .json(&json!({ "name": format!("bouncer-{t}") })),
        )
        .await;
        assert_eq!(s, 201, "creating a tenant: {body}");
        let id = body["tenant_id"].as_str().unwrap().to_owned();
        let (s, body) = send(
            client
                .post(format!("{base}/v1/tenants/{id}/keys"))
                .bearer_auth(&admin)
                .json(&json!({})),
        )
        .await;
        assert_eq!(s, 201, "creating a key: {body}");
        let key = body["key"].as_str().unwrap().to_owned();
        let mut resources = HashSet::new();
        for r in 0..RESOURCES_PER_TENANT {
            let (s, body) = send(
                client
                    .post(format!("{base}/v1/resources"))
                    .bearer_auth(&key)
                    .json(&json!({ "name": format!("fixed-t{t}-r{r}"), "data": { "owner": id } })),
            )
            .await;
            assert_eq!(s, 201, "creating a resource: {body}");
            resources.insert(body["id"].as_str().unwrap().to_owned());
        }
        tenants.push(Tenant { id, key, resources });
    }
    let tenants = Arc::new(tenants);
    let all_ids: Arc<Vec<(usize, String)>> = Arc::new(
        tenants
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.resources.iter().map(move |r| (i, r.clone())))
            .collect(),
    );

    let wanted = requests_wanted();
    let next = Arc::new(AtomicU64::new(0));
    let leaks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let by_kind = Arc::new([
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ]);
    let max_backends = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    // A watcher samples PostgreSQL's view of the connections during the load.
    let watcher = {
        let superuser = db.superuser_client().await;
        let name = db.name().to_owned();
        let max_backends = max_backends.clone();
        let next = next.clone();
        tokio::spawn(async move {
            while next.load(Ordering::Relaxed) < wanted {
                let n: i64 = superuser
                    .query_one(
                        // The invalidation listener connects directly, past pgbouncer (by design).
                        "SELECT count(*) FROM pg_stat_activity
                          WHERE datname = $1 AND usename = 'tenantry_server' AND application_name <> $2",
                        &[&name, &APPLICATION_NAME],
                    )
                    .await
                    .unwrap()
                    .get(0);
                max_backends.fetch_max(n as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, base, tenants, all_ids) = (
            client.clone(),
            base.clone(),
            tenants.clone(),
            all_ids.clone(),
        );
        let (next, leaks, failures, by_kind) = (
            next.clone(),
            leaks.clone(),
            failures.clone(),
            by_kind.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= wanted {
                    break;
                }
                // Consecutive requests come from different tenants, so pgbouncer hands
                // each server connection from one tenant's transaction to another's.
                let me = (n as usize) % TENANTS;
                let caller = &tenants[me];
                let kind = (n / TENANTS as u64) % 4;
                by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
                let mut problems = Vec::new();
                match kind {
                    0 => {
                        let (s, body) = send(
                            client
                                .get(format!("{base}/v1/resources?limit=1000&name_prefix=fixed-"))
                                .bearer_auth(&caller.key),
                        )
                        .await;
                        let items = body["items"].as_array().cloned().unwrap_or_default();
                        if s != 200 {
                            problems.push(format!("list answered {s}: {body}"));
                        }
                        let foreign = items
                            .iter()
                            .filter(|i| i["tenant_id"].as_str() != Some(&caller.id))
                            .count();
                        if foreign > 0 {
                            leaks.fetch_add(foreign as u64, Ordering::Relaxed);
                            problems.push(format!(
                                "LEAK: list of {} carried {foreign} foreign rows: {body}",
                                caller.id
                            ));
                        }
                        let seen: HashSet<String> = items
                            .iter()
                            .filter_map(|i| i["id"].as_str().map(str::to_owned))
                            .collect();
                        if s == 200 && seen != caller.resources {
                            problems.push(format!(
                                "list of {} is not exactly its {} resources: {body}",
                                caller.id,
                                caller.resources.len()
                            ));
                        }
                    }
                    1 => {
                        let own = caller
                            .resources
                            .iter()
                            .nth((n as usize / TENANTS) % RESOURCES_PER_TENANT)
                            .unwrap();
                        let (s, body) = send(
                            client
                                .get(format!("{base}/v1/resources/{own}"))
                                .bearer_auth(&caller.key),
                        )
                        .await;
                        if body["tenant_id"].as_str().is_some_and(|t| t != caller.id) {
                            leaks.fetch_add(1, Ordering::Relaxed);
                            problems
                                .push(format!("LEAK: {} read a foreign row: {body}", caller.id));
                        }
                        if s != 200 || body["id"].as_str() != Some(own) {
                            problems.push(format!("own resource {own} answered {s}: {body}"));
                        }
                    }
                    3 => {
                        // A write: lands in the caller's tenant, whoever used the connection last.
                        let (s, body) = send(
                            client
                                .post(format!("{base}/v1/resources"))
                                .bearer_auth(&caller.key)
                                .json(&json!({ "name": format!("w-{n}") })),
                        )
                        .await;
                        if s != 201 {
                            problems.push(format!("create answered {s}: {body}"));
                        } else if body["tenant_id"].as_str() != Some(&caller.id) {
                            leaks.fetch_add(1, Ordering::Relaxed);
                            problems.push(format!(
                                "LEAK: {} created a row in another tenant: {body}",
                                caller.id
                            ));
                        }
                    }
                    _ => {
                        // Another tenant's resource: 404, exactly like a missing one.
                        let (owner, foreign) = all_ids
                            .iter()
                            .cycle()
                            .skip(n as usize % all_ids.len())
                            .find(|(o, _)| *o != me)
                            .unwrap();
                        let (s, body) = send(
                            client
                                .get(format!("{base}/v1/resources/{foreign}"))
                                .bearer_auth(&caller.key),
                        )
                        .await;
                        if s != 404 {
                            if s == 200 {
                                leaks.fetch_add(1, Ordering::Relaxed);
                            }
                            problems.push(format!(
                                "LEAK?: {} reading tenant {}'s {foreign} answered {s}: {body}",
                                caller.id, tenants[*owner].id
                            ));
                        }
                    }
                }
                if !problems.is_empty() {
                    let mut f = failures.lock().unwrap();
                    if f.len() < 20 {
                        f.extend(problems);
                    } else {
                        f.push(String::new());
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("a load worker panicked");
    }
    let elapsed = started.elapsed();
    watcher.await.unwrap();

    server
        .stop()
        .await
        .expect("stopped once")
        .expect("server did not stop")
        .unwrap()
        .unwrap();

    // The request log went through pgbouncer too: one row per tenant request.
    let superuser = db.superuser_client().await;
    let logged: i64 = superuser
        .query_one(
            "SELECT count(*) FROM tenantry.request_log WHERE route LIKE '/v1/resources%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let failures = failures.lock().unwrap();
    let leaks = leaks.load(Ordering::Relaxed);
    let max_backends = max_backends.load(Ordering::Relaxed);
    eprintln!(
        "pgbouncer run: {wanted} requests ({} list, {} own get, {} foreign get, {} create) from {TENANTS} tenants \
         over {SERVER_CONNECTIONS} server connections multiplexed by pgbouncer (pool_size {POOL_SIZE}, \
         at most {max_backends} PostgreSQL backends seen) with {CONCURRENCY} concurrent clients in {:.1} s \
         ({:.0} req/s); {} wrong answers, {leaks} leaks; {} request-log rows for them",
        by_kind[0].load(Ordering::Relaxed),
        by_kind[1].load(Ordering::Relaxed),
        by_kind[2].load(Ordering::Relaxed),
        by_kind[3].load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        wanted as f64 / elapsed.as_secs_f64(),
        failures.len(),
        logged - (TENANTS * RESOURCES_PER_TENANT) as i64,
    );
    assert!(
        failures.is_empty() && leaks == 0,
        "{leaks} leaks; wrong answers (first 20):\n{}\npgbouncer log:\n{}",
        failures.join("\n"),
        bouncer.logs()
    );
    assert!(
        max_backends <= POOL_SIZE,
        "pgbouncer was not in the path: {max_backends} backends for a pool of {POOL_SIZE}"
    );
    assert!(
        max_backends > 0,
        "no backend connection of tenantry_server was ever seen during the load"
    );
    drop(bouncer);
}

#[test]
fn the_pgbouncer_binary_is_found_where_debian_installs_it() {
    let binary = find_pgbouncer();
    let out = Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("PgBouncer"),
        "{} --version printed {text:?}",
        binary.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_boot_checks_work_through_pgbouncer_while_other_clients_share_its_connections() {
    log_to_test_output();
    let db = TestDatabase::new().await;
    let bouncer = PgBouncer::start(&db.server_url(), db.name(), 2);
    let connect = || {
        let mut config = DatabaseConfig::new(bouncer.url(db.name(), "tenantry_server"))
            .with_context_key(db.context_key().clone());
        config.statement_mode = StatementMode::Unnamed;
        config.max_connections = 4;
        Database::connect(&config).expect("pool through pgbouncer")
    };
    // Another server on the same pgbouncer keeps its server connections busy.
    let busy = connect();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (busy, running) = (busy.clone(), running.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                busy.ping().await.expect("ping through pgbouncer");
                busy.login_role_check().await.ok();
            }
        }));
    }
    let mut failures = Vec::new();
    for _ in 0..100 {
        // What `tenantry serve` runs at boot, each time from a fresh pool (a new process).
        let booting = connect();
        match booting.check_schema().await {
            Ok(()) => {}
            Err(e) => failures.push(format!("check_schema: {e}")),
        }
        match booting.login_role_check().await {
            Ok(check) => assert_eq!(check.problem(), None),
            Err(e) => failures.push(format!("login_role_check: {e}")),
        }
    }
    running.store(false, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of 200 boot checks failed through pgbouncer, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
