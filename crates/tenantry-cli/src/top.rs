//! `tenantry top`: the busiest tenants of a running server, refreshed in the terminal (requests per second, errors, p95 latency, rows and storage), read from its `GET /v1/stats/tenants`.

use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

/// Arguments of `tenantry top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The server's base URL.
    #[arg(long, env = "TENANTRY_URL", default_value = "http://127.0.0.1:8080", value_parser = base_url)]
    url: String,
    /// The admin token (default: TENANTRY_ADMIN_TOKEN, else `<data-dir>/admin.token`).
    #[arg(long, env = "TENANTRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Where `tenantry serve` keeps its admin token when it generated one.
    #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
    data_dir: PathBuf,
    /// Seconds between refreshes (0.2 to 86400).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Print the table once and exit (for scripts and logs).
    #[arg(long)]
    once: bool,
}

#[derive(Debug, Deserialize)]
struct Counts {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    p95_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Row {
    tenant_id: String,
    current: Counts,
    last: Counts,
    resources: Option<i64>,
    storage_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Other {
    current: Counts,
    last: Counts,
}

#[derive(Debug, Deserialize)]
struct Report {
    period_secs: f64,
    current_elapsed_secs: f64,
    tracked: usize,
    tenants: Vec<Row>,
    other: Other,
}

/// Runs `tenantry top`.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    // (A huge or infinite one panicked turning it into a Duration: a new
    // operator's review.)
    if !(0.2..=86_400.0).contains(&args.interval) {
        bail!("--interval must be 0.2 to 86400 seconds");
    }
    let token = match &args.admin_token {
        Some(t) => t.clone(),
        None => {
            let path = args.data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "no admin token: set TENANTRY_ADMIN_TOKEN or --admin-token, or point \
                         --data-dir (TENANTRY_DATA_DIR) at the data directory of the running \
                         `tenantry serve`, whose admin.token it reads (tried {})",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/v1/stats/tenants", args.url.trim_end_matches('/'));
    // One listener for the whole run, polled while fetching too: a fresh
    // ctrl_c() per pause missed an interrupt that came during a fetch, after
    // which the process ignored it (tokio had replaced the default action).
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let report = tokio::select! {
            report = fetch(&client, &url, &token) => report?,
            _ = &mut interrupted => return Ok(()),
        };
        let table = render(&args.url, &report);
        let mut out = std::io::stdout().lock();
        if args.once {
            out.write_all(table.as_bytes())?;
            return Ok(());
        }
        // On a terminal, clear the screen and draw from the top left; into a
        // file or a pipe, one plain frame after another.
        if std::io::IsTerminal::is_terminal(&out) {
            write!(out, "\x1b[2J\x1b[H{table}")?;
        } else {
            writeln!(out, "{table}")?;
        }
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.interval)) => {}
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// A base URL with its scheme (`127.0.0.1:8080` alone is taken for a
/// relative URL, which reqwest refused as "builder error").
fn base_url(url: &str) -> Result<String, String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(url.to_owned()),
        _ => Err(format!(
            "expected the server's base URL with its scheme, such as http://{}",
            url.trim_start_matches("//")
        )),
    }
}

async fn fetch(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Report> {
    let response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {body}");
    }
    response
        .json()
        .await
        .with_context(|| format!("reading {url}"))
}

/// Requests per second: of the period under way once a second of it has
/// passed, of the last complete period before that.
fn rate(current: &Counts, last: &Counts, report: &Report) -> f64 {
    if report.current_elapsed_secs >= 1.0 {
        current.requests as f64 / report.current_elapsed_secs
    } else {
        last.requests as f64 / report.period_secs
    }
}

fn bytes(n: Option<i64>) -> String {
    let Some(n) = n else { return "-".into() };
    let n = n as f64;
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0)),
        n if n >= 1024.0 * 1024.0 => format!("{:.1} MiB", n / (1024.0 * 1024.0)),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}

fn line(
    name: &str,
    current: &Counts,
    last: &Counts,
    rows: String,
    storage: String,
    report: &Report,
) -> String {
    let p95 = current
        .p95_ms
        .or(last.p95_ms)
        .map(|ms| format!("{ms:.1}"))
        .unwrap_or_else(|| "-".into());
    format!(
        "{name:<36}  {:>8.1}  {:>8}  {:>6}  {:>6}  {p95:>8}  {rows:>9}  {storage:>10}\n",
        rate(current, last, report),
        current.requests,
        current.client_errors,
        current.server_errors,
    )
}

fn render(url: &str, report: &Report) -> String {
    let mut out = format!(
        "tenantry top  {url}  period {:.0} s ({:.0} s elapsed)  {} tenants tracked\n\n",
        report.period_secs, report.current_elapsed_secs, report.tracked
    );
    out.push_str(&format!(
        "{:<36}  {:>8}  {:>8}  {:>6}  {:>6}  {:>8}  {:>9}  {:>10}\n",
        "TENANT", "REQ/S", "REQS", "4XX", "5XX", "P95 MS", "ROWS", "STORAGE"
    ));
    for t in &report.tenants {
        out.push_str(&line(
            &t.tenant_id,
            &t.current,
            &t.last,
            t.resources
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            bytes(t.storage_bytes),
            report,
        ));
    }
    out.push_str(&line(
        "other",
        &report.other.current,
        &report.other.last,
        "-".into(),
        "-".into(),
        report,
    ));
    out
}
