//! The `tenantry` command: a thin front door that parses arguments and hands each subcommand to its module (`serve`, `admin`, `local`).

mod admin;
mod context_key;
mod export;
mod local;
mod output;
mod serve;
mod tables;
mod top;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::output::outln;

/// Multi-tenancy for PostgreSQL that holds even when application code is wrong.
#[derive(Debug, Parser)]
#[command(name = "tenantry", version = version(), about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the database is: `DATABASE_URL`, or the embedded cluster in the data directory.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Connection string; unset: the embedded cluster in --data-dir (started if not running).
    /// Prefer the environment variable or the settings file when it holds a
    /// password: a flag shows in `ps` to every local user.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Data directory of the embedded cluster.
    #[arg(
        long,
        env = "TENANTRY_DATA_DIR",
        default_value = ".tenantry",
        global = true
    )]
    pub data_dir: PathBuf,
    /// The database's context key (`tenantry context-key` prints it); not
    /// needed when DATABASE_URL's role may read it, nor for the embedded cluster.
    /// A secret: pass it in the environment or the settings file (a flag
    /// shows in `ps` to every local user).
    #[arg(
        long,
        env = "TENANTRY_CONTEXT_KEY",
        hide_env_values = true,
        global = true
    )]
    pub context_key: Option<String>,
    /// TOML settings file (the README's "Configuration"): its `database_url`,
    /// `data_dir` and `context_key` apply below flags and environment variables.
    #[arg(long, env = "TENANTRY_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

/// `--version`: the package version and the schema this build migrates to
/// (its newest migration and a digest of its definitions), so that two
/// builds of one package version can be told apart (found by an upgrade
/// review: every build said `tenantry 0.1.0`).
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} ({})",
            env!("CARGO_PKG_VERSION"),
            tenantry_db::migrate::BuildSchema::this_build()
        )
    })
}

/// What `serve --help` says beyond its flags: the settings it reads from
/// the file or the environment only.
const SERVE_SETTINGS: &str = "\
Settings without a flag come from the settings file (--config) or their environment variable:
  TENANTRY_CONTEXT_KEY     the context key (`tenantry context-key`); required with DATABASE_URL
  TENANTRY_ADMIN_TOKEN     the admin token; default: generated once into <data dir>/admin.token
  TENANTRY_METRICS_TOKEN   a token that reads /metrics and nothing else (for the scraper)
  TENANTRY_METRICS_PUBLIC  true: /metrics answers its totals without a token; default: false
  TENANTRY_INVALIDATION_URL, TENANTRY_MAX_CONNECTIONS, TENANTRY_MAX_CONNECTIONS_PER_TENANT,
  TENANTRY_BODY_LIMIT_BYTES, TENANTRY_REQUEST_LOG, TENANTRY_KEY_CACHE_TTL_MS,
  TENANTRY_STATEMENT_TIMEOUT_MS, TENANTRY_LOCK_TIMEOUT_MS, TENANTRY_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  TENANTRY_DATABASE_REPLY_TIMEOUT_MS, TENANTRY_ACQUIRE_TIMEOUT_MS, TENANTRY_OTLP_ENDPOINT,
  TENANTRY_SHUTDOWN_GRACE_SECS, TENANTRY_HTTP_HEADER_TIMEOUT_MS, TENANTRY_HTTP_SEND_TIMEOUT_MS,
  TENANTRY_HTTP_BODY_TIMEOUT_MS, TENANTRY_HTTP_MAX_CONNECTIONS, TENANTRY_TRUSTED_PROXIES,
  TENANTRY_CORS_ORIGINS, TENANTRY_METRICS_REFRESH_SECS, TENANTRY_REQUEST_LOG_QUEUE,
  TENANTRY_REQUEST_LOG_BATCH, TENANTRY_REQUEST_LOG_KEEP_DAYS, TENANTRY_TENANT_STATS_TOP,
  TENANTRY_TENANT_STATS_PERIOD_SECS, TENANTRY_MAX_REQUESTS_IN_FLIGHT_PER_TENANT,
  TENANTRY_TCP_USER_TIMEOUT_MS, TENANTRY_TCP_KEEPALIVE_IDLE_SECS, TENANTRY_JWT_* (an identity provider's tokens: docs/people.md)
README.md, \"Configuration\", lists every setting with its default; a misspelt key or
TENANTRY_JWT_* variable stops the server, another unknown TENANTRY_* variable is named
in a warning.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded PostgreSQL unless DATABASE_URL is set).
    #[command(after_long_help = SERVE_SETTINGS)]
    Serve(serve::ServeArgs),
    /// Apply pending migrations to DATABASE_URL, or to the embedded cluster when it
    /// is unset; then bring every schema tenant's schema to the latest
    /// tenant-schema step, one schema per transaction (resumable).
    Migrate {
        #[command(flatten)]
        target: Target,
    },
    /// Print the database's newest context key (as a superuser): give it to
    /// servers that connect with DATABASE_URL as TENANTRY_CONTEXT_KEY.
    /// Subcommands rotate, list and retire keys.
    ContextKey(context_key::ContextKeyArgs),
    /// The embedded PostgreSQL cluster.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Manage tenants.
    Tenant(admin::TenantArgs),
    /// Manage a tenant's API keys.
    Key(admin::KeyArgs),
    /// Manage a tenant's roles.
    Role(admin::RoleArgs),
    /// Act as a member of a tenant for a bounded time (support): start, stop, list.
    Impersonate(admin::ImpersonateArgs),
    /// Usage of a tenant: resources, storage, hourly requests.
    Usage(admin::UsageArgs),
    /// Your own tables as tenant tables: adopt, alter, release, list.
    Table(tables::TableArgs),
    /// Check that every adopted table still satisfies tenantry's rules, every
    /// schema tenant's schema ran every tenant-schema step and no login acting
    /// for tenants can become a built-in role that reaches past tenantry's
    /// grants; exits 1 naming each problem and its fix, 2 when it could not
    /// check (no database, no rights).
    Doctor(tables::DoctorArgs),
    /// The busiest tenants of a running server, live: requests/s, errors, p95
    /// latency, rows and storage (its GET /v1/stats/tenants, admin token).
    Top(top::TopArgs),
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Start the embedded cluster in the foreground and print its connection string; Ctrl-C stops it.
    Start {
        /// Data directory of the embedded cluster.
        #[arg(long, env = "TENANTRY_DATA_DIR", default_value = ".tenantry")]
        data_dir: PathBuf,
        /// Also listen on TCP at this address, e.g. 127.0.0.1:5433 (password in DATA_DIR/superuser.password).
        #[arg(long)]
        tcp: Option<String>,
    },
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, event fields at the top level (for log pipelines).
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// JSON when stdout is not a terminal (a service manager, a container), text when it is.
    pub(crate) fn detect() -> Self {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            Self::Text
        } else {
            Self::Json
        }
    }
}

/// What the log subscriber keeps running until the process ends: the OTLP
/// exporter, when one is configured (feature `otlp`).
struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<tenantry_api::telemetry::otlp::Exporter>,
}

impl Telemetry {
    /// Sends the spans still buffered (the exporter blocks: off the runtime's threads).
    async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = self.otlp {
            let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        }
    }
}

/// How `command` writes its log lines: `serve` as its flag or the terminal
/// says, every other command as text.
fn log_format(command: &Command) -> LogFormat {
    match command {
        Command::Serve(args) => args.log_format.unwrap_or_else(LogFormat::detect),
        _ => LogFormat::Text,
    }
}

/// Installs the log subscriber: `RUST_LOG` when set, else warnings, and for
/// `serve` also the one INFO line per request (target `tenantry::request`)
/// and, with `otlp_endpoint` set (feature `otlp`), trace export.
fn init_logging(command: &Command) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};

    // deadpool's "Connection error: …" (target deadpool.postgres) is said
    // when a pooled connection's server goes away, which is also every
    // embedded cluster's stop at the end of a command: tenantry says what a
    // lost database means where it matters (a request's 503, its WARN line).
    let format = log_format(command);
    let (default_filter, otlp_endpoint) = match command {
        Command::Serve(args) => (
            "warn,deadpool.postgres=error,tenantry::request=info,tenantry::startup=info,tenantry::serve=info",
            // Errors in the settings are reported by `serve` itself.
            tenantry_api::config::Settings::load(args.config.as_deref())
                .ok()
                .and_then(|s| s.otlp_endpoint),
        ),
        _ => ("warn,deadpool.postgres=error", None),
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, bad_rust_log) = log_filter(rust_log.as_deref(), default_filter);
    let driver_cap = tenantry_axum::log::driver_cap(rust_log.as_deref());
    if let Some(bad) = bad_rust_log {
        match format {
            LogFormat::Json => json_line("WARN", &bad, None),
            LogFormat::Text => eprintln!("warning: {bad}"),
        }
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .with_filter(driver_cap.clone())
            .boxed(),
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .with_filter(driver_cap.clone())
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otlp")]
    {
        let mut telemetry = Telemetry { otlp: None };
        match otlp_endpoint {
            Some(endpoint) => {
                let (layer, exporter) = tenantry_api::telemetry::otlp::layer(&endpoint)?;
                registry.with(layer).init();
                telemetry.otlp = Some(exporter);
            }
            None => registry.init(),
        }
        Ok(telemetry)
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        if otlp_endpoint.is_some() {
            anyhow::bail!(
                "otlp_endpoint (TENANTRY_OTLP_ENDPOINT) is set, but this tenantry was built \
                 without trace export: build it with `cargo build --release --features otlp`"
            );
        }
        Ok(Telemetry {})
    }
}

/// The log filter: `RUST_LOG` when set and valid (else `default`, and the
/// reason it was not taken, said on stderr: a filter that did not parse fell
/// back without a word). [`tenantry_axum::log::driver_cap`] goes with it: at DEBUG the
/// PostgreSQL driver logs every statement's parameters, API keys' lookup
/// hashes and context proofs among them (found by an operations review with
/// `RUST_LOG=debug`).
fn log_filter(
    rust_log: Option<&str>,
    default: &str,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    let asked = rust_log.map(str::trim).filter(|v| !v.is_empty());
    let (filter, bad) = match asked {
        None => (EnvFilter::new(default), None),
        Some(v) => match EnvFilter::try_new(v) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(default),
                Some(format!(
                    "RUST_LOG={v:?} is not a log filter ({e}): logging with the default, {default}"
                )),
            ),
        },
    };
    (filter, bad)
}

#[tokio::main]
async fn main() {
    let cli = match parse_with_config() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            std::process::exit(1);
        }
    };
    // With JSON logs, serve's last word (why it stopped) is a JSON line too:
    // a log pipeline that parses every line lost the crash loop's reason
    // (found by an operations review).
    let json_errors = log_format(&cli.command) == LogFormat::Json;
    let telemetry = match init_logging(&cli.command) {
        Ok(telemetry) => telemetry,
        // (A JSON line too: an OTLP endpoint this build cannot serve was a
        // plain one, found by an on-call review.)
        Err(e) if json_errors => {
            json_line("ERROR", "tenantry serve stopped", Some(&causes(&e)));
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Migrate { target } => migrate(target).await,
        Command::ContextKey(args) => {
            local::needs_migration_role(context_key::run(args).await, "tenantry context-key")
        }
        Command::Db {
            command: DbCommand::Start { data_dir, tcp },
        } => db_start(data_dir, tcp).await,
        Command::Tenant(args) => {
            local::needs_tenant_role(admin::tenant(args).await, "tenantry tenant")
        }
        Command::Key(args) => local::needs_tenant_role(admin::key(args).await, "tenantry key"),
        Command::Role(args) => local::needs_tenant_role(admin::role(args).await, "tenantry role"),
        Command::Impersonate(args) => {
            local::needs_tenant_role(admin::impersonate(args).await, "tenantry impersonate")
        }
        Command::Usage(args) => {
            local::needs_tenant_role(admin::usage(args).await, "tenantry usage")
        }
        Command::Table(args) => {
            local::needs_migration_role(tables::run(args).await, "tenantry table")
        }
        Command::Doctor(args) => {
            let checked = tables::doctor(args).await;
            // 1: problems found; 2: the doctor could not check.
            if let Err(e) = &checked {
                if e.downcast_ref::<tables::ProblemsFound>().is_none() {
                    telemetry.shutdown().await;
                    eprintln!("error: {}", causes(e));
                    std::process::exit(2);
                }
            }
            checked
        }
        Command::Top(args) => top::run(args).await,
    };
    telemetry.shutdown().await;
    if let Err(e) = result {
        if json_errors {
            json_line("ERROR", "tenantry serve stopped", Some(&causes(&e)));
        } else {
            eprintln!("error: {}", causes(&e));
        }
        std::process::exit(1);
    }
}

/// A line of serve's JSON log written without the log (before it is set up,
/// or after it is shut down), in its fields.
fn json_line(level: &str, message: &str, error: Option<&str>) {
    let mut line = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level,
        "target": "tenantry::serve",
        "message": message,
    });
    if let Some(error) = error {
        line["error"] = error.into();
    }
    eprintln!("{line}");
}

/// The error and its causes, joined by `: `, each said once: a cause whose
/// text the message so far already ends with, after a `: ` (an error that
/// quotes its source in its own text), is not repeated ("No such file or directory (os
/// error 2)" twice, found by a new user's review).
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out == text || out.ends_with(&format!(": {text}")) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The command line, with the settings file's `database_url`, `data_dir` and
/// `context_key` (`--config FILE` or `TENANTRY_CONFIG`) as the defaults of
/// every command but `serve`, which reads the whole file itself: the file
/// `tenantry serve` runs with points the other commands at the same database.
fn parse_with_config() -> anyhow::Result<Cli> {
    let mut command = Cli::command();
    let mut args = std::env::args_os().skip(1);
    let mut file = None;
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            file = args.next().map(PathBuf::from);
        } else if let Some(path) = arg.strip_prefix("--config=") {
            file = Some(PathBuf::from(path));
        }
    }
    let file = file.or_else(|| {
        std::env::var_os("TENANTRY_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let serving = std::env::args_os().nth(1).is_some_and(|a| a == "serve");
    if let (Some(file), false) = (file, serving) {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the settings file {}", file.display()))?;
        // The whole file is checked as serve reads it: a misspelt key
        // (`databse_url`) is refused here too instead of ignored, which sent
        // the command to another database than the one serve runs with.
        tenantry_api::config::from_toml::<tenantry_api::config::Settings>(&file, &text)
            .context("the settings file")?;
        let table: toml::Table =
            tenantry_api::config::from_toml(&file, &text).context("the settings file")?;
        let mut defaults = Vec::new();
        for key in ["database_url", "data_dir", "context_key"] {
            match table.get(key) {
                None => {}
                Some(toml::Value::String(v)) => defaults.push((key, v.clone())),
                Some(_) => anyhow::bail!(
                    "the settings file {}: {key} is not a string",
                    file.display()
                ),
            }
        }
        command = with_defaults(command, &defaults);
    }
    let matches = command.get_matches();
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// `command` and its subcommands (but `serve`) with `defaults` for the
/// arguments of those ids they have.
fn with_defaults(mut command: clap::Command, defaults: &[(&str, String)]) -> clap::Command {
    for (id, value) in defaults {
        if command.get_arguments().any(|a| a.get_id() == *id) {
            // Leaked once per process: clap keeps defaults as 'static str.
            let value: &'static str = Box::leak(value.clone().into_boxed_str());
            command = command.mut_arg(*id, |a| {
                // A variable set but empty counts as unset, as for serve
                // (clap would take "" and hide the file's value).
                let empty_env = a
                    .get_env()
                    .and_then(std::env::var_os)
                    .is_some_and(|v| v.is_empty());
                let a = a.default_value(value).hide_default_value(true);
                if empty_env {
                    a.env(None::<&'static str>)
                } else {
                    a
                }
            });
        }
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|n| n != "serve")
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |c| with_defaults(c, defaults));
    }
    command
}

async fn migrate(target: Target) -> anyhow::Result<()> {
    // Without a URL: use the embedded cluster (already running, or started for the occasion).
    let applied = match target.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Some(local::migrate_url(url).await?),
        // Opening the embedded cluster provisions (and so migrates) its database.
        None => None,
    };
    let (mut client, cluster) =
        local::migration_client_or_new(&target, "migrate tenant schemas").await?;
    // Which database: "up to date" about the wrong one misleads.
    match cluster.as_ref().map(|c| c.location()) {
        Some(place) => outln!("the embedded cluster in {}", place.display()),
        None => outln!("{}", local::database_name(&client).await?),
    }
    let (applied, definitions) = match (applied, &cluster) {
        (Some(migrated), _) => (migrated.applied, migrated.definitions),
        (None, Some(cluster)) => (cluster.applied().to_vec(), None),
        (None, None) => (Vec::new(), None),
    };
    if applied.is_empty() {
        let all = tenantry_db::migrate::migrations();
        let versions = format!(
            "{} migrations, the latest {:04}",
            all.len(),
            all.last().map_or(0, |m| m.version)
        );
        match definitions {
            Some(names) => outln!(
                "versioned migrations up to date ({versions}); definitions applied again: {names}"
            ),
            None => outln!("schema is up to date ({versions})"),
        }
    } else {
        for m in &applied {
            outln!("applied {:04} {}", m.version, m.name);
        }
        outln!("{} migration(s) applied", applied.len());
    }
    // Then every schema tenant's schema, one per transaction (resumable).
    let migrated = migrate_tenant_schemas(&mut client).await?;
    if migrated > 0 {
        outln!("{migrated} tenant schema(s) brought to the latest tenant-schema step");
    }
    Ok(())
}

/// Brings every schema tenant's schema to the latest tenant-schema step, one
/// per transaction (resumable), with a progress bar on stderr; how many it
/// migrated.
pub(crate) async fn migrate_tenant_schemas(
    client: &mut tokio_postgres::Client,
) -> anyhow::Result<u64> {
    let bar = indicatif::ProgressBar::hidden();
    let migrated = tenantry_db::migrate::migrate_tenant_schemas(client, |done, total| {
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "migrating tenant schemas {bar:40} {pos}/{len}",
                )
                .expect("a valid template"),
            );
        }
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    Ok(migrated?)
}

async fn db_start(data_dir: PathBuf, tcp: Option<String>) -> anyhow::Result<()> {
    let tcp = tcp
        .map(|t| -> anyhow::Result<(String, u16)> {
            let (host, port) = t.rsplit_once(':').context("--tcp expects HOST:PORT")?;
            Ok((host.to_owned(), port.parse().context("--tcp port")?))
        })
        .transpose()?;
    let local = local::LocalCluster::open(&data_dir, tcp).await?;
    if !local.owns_process() {
        anyhow::bail!(
            "the embedded cluster in {} is already running (started by another process); connect with: {}",
            data_dir.display(),
            local.superuser_url()
        );
    }
    outln!("{}", local.superuser_url());
    if let Some(tcp) = local.tcp_url() {
        outln!("{tcp}");
    }
    eprintln!("PostgreSQL is running; press Ctrl-C to stop it.");
    local::wait_for_shutdown_signal().await;
    eprintln!("stopping PostgreSQL");
    drop(local);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::causes;

    /// Whether the log, with `RUST_LOG` as `asked`, writes a DEBUG line of
    /// `target`, inside a span named `request` as the server's requests are.
    fn lets_debug(asked: Option<&str>, target: &str) -> bool {
        use tracing_subscriber::{layer::SubscriberExt, Layer};
        let (filter, bad) = super::log_filter(asked, "warn");
        assert_eq!(bad, None);
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(filter)
            .with_filter(tenantry_axum::log::driver_cap(asked));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let _in = span.enter();
            match target {
                "tokio_postgres::query" => {
                    tracing::enabled!(target: "tokio_postgres::query", tracing::Level::DEBUG)
                }
                _ => tracing::enabled!(target: "tenantry::db", tracing::Level::DEBUG),
            }
        })
    }

    #[test]
    fn the_drivers_statement_parameters_are_never_logged_unless_rust_log_names_the_driver() {
        for asked in [
            Some("debug"),
            Some("trace"),
            Some("tenantry=debug,debug"),
            Some("[request]=debug"),
            None,
        ] {
            assert!(!lets_debug(asked, "tokio_postgres::query"), "{asked:?}");
        }
        assert!(lets_debug(Some("debug"), "tenantry::db"));
        assert!(lets_debug(Some("[request]=debug"), "tenantry::db"));
        assert!(lets_debug(
            Some("debug,tokio_postgres=debug"),
            "tokio_postgres::query"
        ));
        // Another crate whose name starts like the driver's, or another of
        // the driver's modules, opens nothing of its statements.
        for asked in [
            "debug,tokio_postgres_rustls=trace",
            "debug,tokio_postgres::connect=debug",
            "debug,[tokio_postgres]=debug",
        ] {
            assert!(!lets_debug(Some(asked), "tokio_postgres::query"), "{asked}");
        }
        assert!(lets_debug(
            Some("debug,tokio_postgres::query=debug"),
            "tokio_postgres::query"
        ));
    }

    #[test]
    fn a_rust_log_that_is_no_filter_is_said_and_the_default_used() {
        for bad in ["[[[", "tenantry=bogus"] {
            let (_, said) = super::log_filter(Some(bad), "warn");
            let said = said.unwrap_or_else(|| panic!("{bad} taken"));
            assert!(
                said.contains(bad) && said.contains("default, warn"),
                "{said}"
            );
        }
    }

    #[test]
    fn serve_help_names_every_variable_the_settings_read() {
        let config = include_str!("../../tenantry-api/src/config.rs");
        let help = format!(
            "{} TENANTRY_LISTEN DATABASE_URL TENANTRY_DATA_DIR TENANTRY_STATEMENT_MODE",
            super::SERVE_SETTINGS
        );
        let mut rest = config;
        while let Some(at) = rest.find("\"TENANTRY_") {
            let name: String = rest[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + 1..];
            let named = if name.starts_with("TENANTRY_JWT_") {
                help.contains("TENANTRY_JWT_*")
            } else {
                name == "TENANTRY_" || help.contains(&name)
            };
            assert!(named, "serve --help does not name {name}");
        }
    }

    #[test]
    fn a_cause_already_quoted_by_its_error_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let quoted = anyhow::Error::new(std::io::Error::new(
            io.kind(),
            format!("reading x.toml: {io}"),
        ));
        assert_eq!(causes(&quoted), format!("reading x.toml: {io}"));
        #[derive(Debug)]
        struct Read {
            source: std::io::Error,
        }
        impl std::fmt::Display for Read {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading x.toml: {}", self.source)
            }
        }
        impl std::error::Error for Read {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let e = anyhow::Error::new(Read { source: io }).context("loading settings");
        let said = causes(&e);
        assert_eq!(said.matches("entity not found").count(), 1, "{said}");
        assert!(
            said.starts_with("loading settings: reading x.toml: "),
            "{said}"
        );
    }
}
