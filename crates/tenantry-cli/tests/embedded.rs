//! The embedded default kept alive while `tenantry serve` uses it: a postgres killed under a running server is started again, and a server attached to the cluster another process started carries on when that process stops (found by a new user's review: the server answered 503 until restarted). Starts at the same moment are tested in tenantry-embedded.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `tenantry serve`, killed (with its postgres, through the
/// parent-death signal) if a failed assertion leaves it running.
struct Served(Option<Child>);

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tenantry serve` on the embedded cluster in `data`, on a free port, with
/// the admin token `tadm_test`: the child, its address, and its stdout (kept
/// open while it runs).
fn serve(data: &Path) -> (Served, String, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("TENANTRY_CONTEXT_KEY")
        .env("TENANTRY_DATA_DIR", data)
        .env("TENANTRY_ADMIN_TOKEN", "tadm_test")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting tenantry serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("serving on"), "{first}");
    let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
    (Served(Some(child)), addr, stdout)
}

/// The status code of `GET path` (0 when the connection fails).
fn status(addr: &str, path: &str) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer tadm_test\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits up to a minute for `GET /v1/tenants` (a query, with the admin
/// token) to answer 200.
fn wait_for_database(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = status(addr, "/v1/tenants");
        if got == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the server still answers {got}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The pid in `postmaster.pid` of the cluster in `data`, if any.
fn postmaster(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("pgdata/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// SIGTERM, then the exit status within a minute.
fn stop(mut served: Served) -> std::process::ExitStatus {
    let mut child = served.0.take().unwrap();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to 30 s for `pid` to be gone.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn a_postgres_killed_under_a_running_server_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr, _out) = serve(&data);
    wait_for_database(&addr, "at start");
    let first = postmaster(&data).expect("a running cluster");
    assert!(Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap()
        .success());
    // Its backends may answer for a moment after the postmaster died: wait
    // for the new postmaster, then for the database through it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        match postmaster(&data) {
            Some(pid) if pid != first && alive(pid) => break pid,
            _ => {
                assert!(Instant::now() < deadline, "postgres was not started again");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    wait_for_database(&addr, "after postgres was killed");
    assert!(stop(child).success());
    assert!(gone(second), "postgres {second} outlived the server");
}

#[test]
fn a_server_attached_to_another_process_cluster_carries_on_when_that_process_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, first_addr, _first_out) = serve(&data);
    wait_for_database(&first_addr, "first server");
    let started_by_first = postmaster(&data).unwrap();
    let (second, second_addr, _second_out) = serve(&data);
    wait_for_database(&second_addr, "second server");
    assert_eq!(
        postmaster(&data),
        Some(started_by_first),
        "the second attached"
    );

    assert!(stop(first).success());
    assert!(
        gone(started_by_first),
        "the first server stops the cluster it started"
    );
    wait_for_database(&second_addr, "second server after the first stopped");
    let now = postmaster(&data).expect("started again");
    assert!(stop(second).success());
    assert!(gone(now), "postgres {now} outlived the last server");
}

/// Found by a review of the example app: two processes making the embedded
/// database in a brand-new data directory at once. One lost the race to
/// create the database and failed; the one that had started the server then
/// stopped it under the other when it was done. Both succeed now, in either
/// role, and no server is left running.
#[test]
fn two_migrate_runs_on_a_new_data_directory_at_once_both_succeed() {
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let runs: Vec<_> = (0..2)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_tenantry"))
                    .arg("migrate")
                    .env_remove("DATABASE_URL")
                    .env_remove("TENANTRY_CONTEXT_KEY")
                    .env("TENANTRY_DATA_DIR", &data)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("starting tenantry migrate")
            })
            .collect();
        for run in runs {
            let out = run.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(postmaster(&data), None, "round {round}: left running");
    }
}

/// `psql` to database `dbname` of the cluster in `data` as `user` (through
/// the socket `postmaster.pid` names): its status and its standard error.
fn psql_as(data: &Path, user: &str, dbname: &str) -> (bool, String) {
    let pid = std::fs::read_to_string(data.join("pgdata/postmaster.pid")).unwrap();
    let lines: Vec<&str> = pid.lines().collect();
    let (port, socket) = (lines[3].trim(), lines[4].trim());
    let out = Command::new("psql")
        .arg(format!(
            "host={socket} port={port} user={user} dbname={dbname}"
        ))
        .args(["-X", "-At", "-c", "SELECT 1"])
        .output()
        .expect("running psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// On its own cluster tenantry closes the databases other than its own to
/// every login but the superuser: in `postgres` PostgreSQL's defaults let
/// the server's login read the server's activity, its locks (which schema
/// tenant's tables were in use), the transaction counter and the WAL
/// position that migrations take from it in tenantry's database (found by
/// a red-team review).
#[test]
fn the_embedded_clusters_other_databases_refuse_the_servers_login() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr, _out) = serve(&data);
    wait_for_database(&addr, "at start");
    for dbname in ["postgres", "template1"] {
        let (ok, err) = psql_as(&data, "tenantry_server", dbname);
        assert!(
            !ok && err.contains("permission denied for database"),
            "{dbname}: {err}"
        );
        assert!(
            psql_as(&data, "postgres", dbname).0,
            "the superuser reaches {dbname}"
        );
    }
    let (ok, err) = psql_as(&data, "tenantry_server", "tenantry");
    assert!(ok, "the server's own database: {err}");
    assert!(stop(child).success());
}
