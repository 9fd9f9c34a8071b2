//! `cargo run -p issue-tracker`: the tracker on `DATABASE_URL` (the server's login, with `ISSUE_TRACKER_MIGRATION_URL` for its migration) or, when it is unset, on the embedded default (a private PostgreSQL in `TENANTRY_DATA_DIR`, default `.tenantry`, the same one `tenantry serve` and the CLI use), accepting people's tokens when `TENANTRY_JWT_*` say whose, listening on `ISSUE_TRACKER_LISTEN` (default 127.0.0.1:8090) until Ctrl-C or SIGTERM.

use issue_tracker::{
    config::{self, DatabaseSource},
    permissions, Application, Settings,
};
use tenantry_db::local::{KeptRunning, LocalCluster};

/// What `--help` prints: the tracker takes no arguments, only the variables
/// below (it started a database and served when asked for help: found by a
/// review).
const USAGE: &str = "issue-tracker: a small issue tracker on tenantry (projects, issues, comments)

Usage: issue-tracker            (no arguments; configured by the environment)

  DATABASE_URL                  the server's login (tenantry_server); unset: the embedded default
  ISSUE_TRACKER_MIGRATION_URL   the migration role, with DATABASE_URL
  TENANTRY_DATA_DIR             the embedded default's data directory (default .tenantry)
  ISSUE_TRACKER_LISTEN          the address to listen on (default 127.0.0.1:8090)
  TENANTRY_JWT_*                people's tokens, as for tenantry serve (README)
  RUST_LOG                      the log filter (default info)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    if let Some(arg) = args.first() {
        eprintln!("issue-tracker takes no arguments (got {arg:?})\n\n{USAGE}");
        std::process::exit(2);
    }
    // The driver's DEBUG lines hold every statement's parameters (key
    // hashes, context proofs, bodies): capped at INFO whatever RUST_LOG
    // says, unless it names tokio_postgres (an on-call review found them in
    // this app's log with RUST_LOG=debug).
    let rust_log = std::env::var("RUST_LOG").ok();
    {
        use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    // Colours for a terminal only: not in a log file or a collector.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_filter(
                        tracing_subscriber::EnvFilter::try_from_default_env()
                            .unwrap_or_else(|_| "info".into()),
                    )
                    .with_filter(tenantry_axum::log::driver_cap(rust_log.as_deref())),
            )
            .init();
    }
    // First: a SIGTERM from now on shuts down cleanly.
    let shutdown = tenantry_axum::shutdown_signal();
    let env = |name: &str| std::env::var(name).ok();
    config::refuse_unknown(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))?;
    let listen = config::listen_from_env(env)?;
    let jwt = config::jwt_from_env(env)?;
    tenantry_axum::jwt::JwtConfig::refuse_unknown_process_env().map_err(|e| anyhow::anyhow!(e))?;
    let (migration, server, cluster, database, cli) = match DatabaseSource::from_env(env)? {
        DatabaseSource::Embedded { data_dir } => {
            let cluster = LocalCluster::open(&data_dir, None).await?;
            let location = cluster.location().display().to_string();
            (
                cluster.superuser_config(),
                cluster.server_config(),
                Some(cluster),
                format!("embedded PostgreSQL in {location} (DATABASE_URL is unset)"),
                // The CLI finds the same cluster through the same
                // TENANTRY_DATA_DIR: named in the hint when it was set (the
                // hint without it made the tenant in the default directory's
                // database: found by a review of the example).
                match env("TENANTRY_DATA_DIR").filter(|dir| !dir.is_empty()) {
                    Some(dir) => format!("TENANTRY_DATA_DIR={} ", shell_quoted(&dir)),
                    None => String::new(),
                },
            )
        }
        DatabaseSource::Url { server, migration } => (
            *migration,
            *server,
            None,
            "DATABASE_URL (as tenantry_server), migrated through ISSUE_TRACKER_MIGRATION_URL"
                .to_owned(),
            // The CLI's DATABASE_URL is the migration role's, not the server's.
            "DATABASE_URL=<ISSUE_TRACKER_MIGRATION_URL> ".to_owned(),
        ),
    };
    let people = match &jwt {
        Some(jwt) => format!(
            "API keys, and tokens of {} naming the tenant in X-Tenant-Id",
            jwt.issuer
        ),
        None => "API keys only (TENANTRY_JWT_ISSUER is unset)".to_owned(),
    };
    let app = Application::build(&Settings {
        listen,
        migration,
        server,
        jwt,
    })
    .await?;
    let addr = app.local_addr();
    println!("issue tracker on http://{addr} (projects, issues, comments; Ctrl-C stops it)");
    println!("database:    {database}");
    println!("callers:     {people}");
    println!(
        "permissions: reads need {}, writes {} (a tenant's own key and its owner hold both)",
        permissions::READ,
        permissions::WRITE
    );
    println!("a tenant and its key, with the same database:");
    println!("  {cli}cargo run -p tenantry-cli -- tenant create acme              # prints the tenant id");
    println!("  {cli}cargo run -p tenantry-cli -- key create <tenant id> --json   # \"key\": the API key");
    println!("  curl -H 'Authorization: Bearer <key>' -H 'Content-Type: application/json' \\");
    println!("       -d '{{\"name\":\"Launch\"}}' http://{addr}/projects");
    // The embedded server is kept up while serving, as `tenantry serve`
    // does: started again when it exits on its own or when the process that
    // started it (a `tenantry serve` sharing the data directory) stops.
    let mut watcher = cluster.map(LocalCluster::keep_running_in_background);
    let stop = KeptRunning::or_lost(watcher.as_mut(), shutdown);
    app.run(stop).await?;
    if let Some(why) = match watcher {
        Some(watcher) => watcher.stop().await,
        None => None,
    } {
        anyhow::bail!("{why}");
    }
    Ok(())
}

/// `text` as one word of a POSIX shell: as it is when it holds only
/// characters no shell treats specially, otherwise in single quotes.
fn shell_quoted(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
