//! `tenantry serve`: settings, database (embedded or DATABASE_URL), role and schema checks, admin token, then the HTTP server until SIGINT/SIGTERM.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use tenantry_api::{
    config::{AdminToken, Secret, Settings},
    Application,
};
use tenantry_db::{Database, DatabaseConfig, TableProblem};

use crate::{local, output::outln};

/// Options of `tenantry serve`: each setting also in the config file and the
/// environment; `--config`, `--allow-table-problems` and `--log-format` in the
/// environment only.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [env TENANTRY_LISTEN; default 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Database of the server's login role (tenantry_server) [env DATABASE_URL; default: embedded].
    /// Prefer the environment variable or the settings file when it holds a
    /// password: a flag shows in `ps` to every local user.
    #[arg(long)]
    database_url: Option<String>,
    /// Data directory: embedded cluster, admin token [env TENANTRY_DATA_DIR; default .tenantry].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `prepared` or `unnamed` (behind pgbouncer in transaction pooling) [env TENANTRY_STATEMENT_MODE].
    #[arg(long)]
    statement_mode: Option<String>,
    /// TOML settings file: the keys of the README's "Configuration" table (listen, database_url, data_dir, [jwt], …).
    #[arg(long, env = "TENANTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve even when an adopted table breaks tenantry's rules (`tenantry doctor`
    /// lists them); each problem is printed as a warning at every start. Never
    /// past a login acting for tenants that can become a role reaching past
    /// tenantry's grants (rule `login_roles`).
    #[arg(long, env = "TENANTRY_ALLOW_TABLE_PROBLEMS")]
    allow_table_problems: bool,
    /// Log lines as `json` or `text` [default: json when stdout is not a terminal, else text].
    #[arg(long, env = "TENANTRY_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::LogFormat>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // With JSON logs, stderr holds one JSON object per line: what serve says
    // there goes through the log then, never as a plain line.
    let json_logs =
        args.log_format.unwrap_or_else(crate::LogFormat::detect) == crate::LogFormat::Json;
    // First: a SIGTERM from now on shuts down cleanly.
    let shutdown = local::wait_for_shutdown_signal();
    let mut settings = Settings::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        settings.listen = l;
    }
    if let Some(u) = args.database_url.filter(|u| !u.is_empty()) {
        settings.database_url = Some(Secret::new(u));
    }
    if let Some(d) = args.data_dir {
        settings.data_dir = d;
    }
    if let Some(m) = args.statement_mode {
        settings.statement_mode = m;
    }
    settings.validate()?;
    for (name, like) in unknown_variables(std::env::vars().map(|(k, _)| k)) {
        let hint = like.map_or_else(String::new, |l| format!(" (did you mean {l}?)"));
        tracing::warn!("{name} is no setting of tenantry serve{hint}: it is ignored");
    }
    // A listen address in use is refused before a cluster is made or started
    // for nothing (the server binds it for good once the database is ready).
    drop(
        std::net::TcpListener::bind(settings.listen)
            .with_context(|| format!("binding the listen address {}", settings.listen))?,
    );

    let pool_config = |mut c: DatabaseConfig| {
        c.max_connections = settings.max_connections;
        c.max_connections_per_tenant = settings.max_connections_per_tenant;
        c.statement_mode = settings.statement_mode().expect("validated");
        c.acquire_timeout = Duration::from_millis(settings.acquire_timeout_ms);
        c.timeouts = settings.timeouts();
        c
    };
    // The cluster first, so that it is dropped (stopped) after the pool.
    let (cluster, db) = match &settings.database_url {
        Some(url) => {
            let key = settings.context_key()?;
            let Some(key) = key else {
                // The database first (unreachable, unmigrated: a database
                // not migrated yet has no key to give), through a pool that
                // proves no context (unnamed statements open no context
                // session; the key it is given is never used).
                let mut probe = DatabaseConfig::new(url.expose())
                    .with_context_key(tenantry_db::ContextKey::new(1, [0; 32]));
                probe.statement_mode = tenantry_db::StatementMode::Unnamed;
                local::schema_ready(&Database::connect(&probe)?, SERVE_BEHIND).await?;
                bail!("refusing to serve tenant traffic: no context key (TENANTRY_CONTEXT_KEY, or context_key in the settings file) to prove tenant contexts to the database\n(print it with `DATABASE_URL=<superuser url> tenantry context-key`)");
            };
            let db = Database::connect(&pool_config(
                DatabaseConfig::new(url.expose()).with_context_key(key),
            ))?;
            local::schema_ready(&db, SERVE_BEHIND).await?;
            (None, db)
        }
        None => {
            let local = local::LocalCluster::open(&settings.data_dir, None).await?;
            if !local.applied().is_empty() {
                let applied = local.applied().len();
                if json_logs {
                    tracing::info!(applied, "applied migrations to the embedded database");
                } else {
                    eprintln!("applied {applied} migration(s) to the embedded database");
                }
            }
            let db = Database::connect(&pool_config(local.database_config()))?;
            (Some(local), db)
        }
    };
    let role = db
        .login_role_check()
        .await
        .context("checking the server's database role")?;
    if let Some(problem) = role.problem() {
        bail!("refusing to serve tenant traffic: {problem}");
    }
    if role.messages_translated() {
        tracing::warn!(
            role = %role.role,
            lc_messages = %role.lc_messages,
            "PostgreSQL's messages reach this server translated, and some answers are told apart by their English words \
             (a row still referenced on delete would be 404, not 409; an unadopted table 403, not 503): \
             as a superuser, ALTER ROLE {} SET lc_messages = 'C' (migration 0057 does it for tenantry_server)",
            role.role
        );
    }
    // A clock behind the database's by more than a minute was refused
    // already (its signed context sessions expired at once); one ahead
    // served, its sessions valid for as much longer, a key's future
    // expires_at refused as past and people's tokens judged by another
    // clock than keys' expiry (found by a review of time-based behaviour).
    let skew = db
        .clock_skew()
        .await
        .context("reading the database's clock")?
        .num_seconds();
    if skew.abs() > MAX_CLOCK_SKEW_SECS {
        bail!(
            "refusing to serve tenant traffic: this machine's clock is {} s {} the database's; \
             the database judges what expires (keys, impersonations, the server's signed contexts) by its clock \
             and this server what clients send (expires_at, people's tokens) by its own: \
             set both right (NTP) so that they agree within {MAX_CLOCK_SKEW_SECS} s",
            skew.abs(),
            if skew > 0 { "behind" } else { "ahead of" },
        );
    }
    if skew.abs() > 5 {
        tracing::warn!(
            skew_secs = skew,
            "this machine's clock and the database's disagree by more than 5 s"
        );
    }
    // Refused on the embedded cluster, the cluster stops with the command:
    // said, with how to reach it for the fixes (found by a review as a new
    // user: psql could not connect to apply them).
    let apply_fixes = if cluster.is_some() {
        "\n(the embedded cluster stops with this command: `tenantry db start` runs it alone and prints how to connect with psql to apply the fixes)"
    } else {
        ""
    };
    let (roles, problems): (Vec<_>, Vec<_>) = db
        .table_problems()
        .await
        .context("checking adopted tables")?
        .into_iter()
        .partition(TableProblem::is_cluster_problem);
    // Not downgraded by --allow-table-problems (that flag is about tables):
    // such a role reaches past every policy, as a superuser's login would,
    // and without its parameter grant tenantry_owner enters no context.
    if !roles.is_empty() {
        bail!(
            "refusing to serve tenant traffic: a login acting for tenants reaches past tenantry's grants (a built-in role, a role attribute, CREATE or a parameter it can set), tenantry_owner may not set a parameter tenantry needs, or tenantry's own objects were changed since migrate:\n{}{apply_fixes}",
            roles
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if !problems.is_empty() {
        let listing: Vec<(bool, String)> = problems
            .iter()
            .map(|p| (p.blocks_serving(), format!("  {p}")))
            .collect();
        let blocking = listing.iter().any(|(blocks, _)| *blocks);
        if blocking && !args.allow_table_problems {
            bail!(
                "refusing to serve tenant traffic: {} problem(s) in {} table(s) break tenantry's rules:\n{}\n(fix them, or start with --allow-table-problems to serve anyway){apply_fixes}",
                problems.len(),
                problems
                    .iter()
                    .map(|p| p.table.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                listing
                    .iter()
                    .map(|(_, line)| line.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        // Once each: through the JSON log, or as a plain block for people
        // (the text log would print it a second time).
        for (blocks, line) in &listing {
            let why = if *blocks {
                "--allow-table-problems"
            } else {
                "a warning: served"
            };
            if json_logs {
                tracing::warn!("adopted table breaks tenantry's rules ({why}): {line}");
            } else {
                eprintln!("WARNING: adopted table breaks tenantry's rules ({why}):\n{line}");
            }
        }
    }

    let (token, token_source) = admin_token(&settings)?;
    // Its errors say what failed (the listen address, invalidation_url, …):
    // a wrong invalidation_url read "binding the listen address" before.
    let app = Application::build(&settings, db, &token).await?;
    let addr = app.local_addr();
    outln!("tenantry is serving on http://{addr}");
    outln!("API docs:     http://{addr}/docs");
    outln!("admin token:  {token_source}");
    if let Some(cluster) = &cluster {
        outln!(
            "database:     embedded PostgreSQL in {}",
            cluster.location().display()
        );
    }
    // The embedded server is kept up while serving: started again when it
    // exits on its own, or when the process that started it stops; the
    // server stops when that fails.
    let mut watcher = cluster.map(tenantry_db::local::LocalCluster::keep_running_in_background);
    let stop = tenantry_db::local::KeptRunning::or_lost(watcher.as_mut(), shutdown);
    let ran = app.run(stop).await;
    // The embedded cluster is stopped whatever the run ended with, and its
    // loss, the likelier cause of a request log that could not be flushed,
    // is the error said.
    let lost = match watcher {
        Some(watcher) => watcher.stop().await,
        None => None,
    };
    if let Some(why) = lost {
        bail!("{why}");
    }
    ran?;
    if json_logs {
        tracing::info!("shut down cleanly");
    } else {
        eprintln!("shut down cleanly");
    }
    Ok(())
}

/// The admin token: from the settings, or generated once into `<data_dir>/admin.token` (0600).
fn admin_token(settings: &Settings) -> anyhow::Result<(String, String)> {
    if let Some(t) = &settings.admin_token {
        // The variable wins over the configuration file (config.rs).
        let source = if std::env::var("TENANTRY_ADMIN_TOKEN").is_ok_and(|v| !v.is_empty()) {
            "from TENANTRY_ADMIN_TOKEN"
        } else {
            "from the configuration file (admin_token)"
        };
        return Ok((t.expose().to_owned(), source.into()));
    }
    let path = settings.data_dir.join("admin.token");
    let location = format!(
        "in {} (mode 0600)",
        std::path::absolute(&path).unwrap_or(path.clone()).display()
    );
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), location)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    // Said as what it is for: a read-only working directory failed with
    // "creating .tenantry: Permission denied" alone (an operations review).
    let why = "to keep the generated admin token; set TENANTRY_ADMIN_TOKEN (the same on every server) or a writable TENANTRY_DATA_DIR";
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {} {why}", settings.data_dir.display()))?;
    let token = AdminToken::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {} {why}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok((token, location))
}

/// How far this machine's clock and the database's may disagree, in seconds.
const MAX_CLOCK_SKEW_SECS: i64 = 60;

/// What `serve` says of a database behind this build.
const SERVE_BEHIND: &str = "the server does not migrate a database it did not start: run `DATABASE_URL=<superuser url> tenantry migrate` first";

/// Variables `serve` reads besides those `serve --help` lists.
const OTHER_SERVE_VARIABLES: &[&str] = &[
    "TENANTRY_LISTEN",
    "TENANTRY_DATA_DIR",
    "TENANTRY_STATEMENT_MODE",
    "TENANTRY_CONFIG",
    "TENANTRY_ALLOW_TABLE_PROBLEMS",
    "TENANTRY_LOG_FORMAT",
    "TENANTRY_PG_BINDIR",
];

/// Prefixes of variables of other tools (tests, benchmarks, `tenantry top`):
/// not settings, and not said. `TENANTRY_JWT_*` are checked by the settings.
const OTHER_TOOLS: &[&str] = &[
    "TENANTRY_JWT_",
    "TENANTRY_TEST_",
    "TENANTRY_BENCH",
    "TENANTRY_CITUS_URL",
    "TENANTRY_PGRLS",
    "TENANTRY_SCHEMATHESIS",
    "TENANTRY_ST_",
    "TENANTRY_MODEL_",
    "TENANTRY_STORM_",
    "TENANTRY_PGBOUNCER_",
    "TENANTRY_URL",
    "TENANTRY_ACTOR",
];

/// The `TENANTRY_*` variables among `names` that `serve` does not read, each
/// with the setting it most resembles (found by an operations review: a
/// misspelt `TENANTRY_MAX_CONECTIONS` was ignored without a word, while a
/// misspelt key of the settings file stops the server).
fn unknown_variables(names: impl Iterator<Item = String>) -> Vec<(String, Option<String>)> {
    let known: Vec<&str> = crate::SERVE_SETTINGS
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("TENANTRY_") && !w.ends_with('_'))
        .chain(OTHER_SERVE_VARIABLES.iter().copied())
        .collect();
    let mut unknown: Vec<(String, Option<String>)> = names
        .filter(|n| n.starts_with("TENANTRY_"))
        .filter(|n| !known.contains(&n.as_str()))
        .filter(|n| !OTHER_TOOLS.iter().any(|p| n.starts_with(p)))
        .map(|n| {
            let like = known
                .iter()
                .map(|k| (strsim::levenshtein(&n, k), *k))
                .min()
                .filter(|(d, _)| *d <= 3)
                .map(|(_, k)| k.to_owned());
            (n, like)
        })
        .collect();
    unknown.sort();
    unknown
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_misspelt_variable_is_named_with_the_setting_it_resembles() {
        let names = [
            "TENANTRY_MAX_CONECTIONS",
            "TENANTRY_MAX_CONNECTIONS",
            "TENANTRY_FOO",
            "TENANTRY_TEST_DATABASE_URL",
            "TENANTRY_JWT_ISSUER",
            "TENANTRY_LISTEN",
            "TENANTRY_CONTEXT_KEY",
            "PATH",
        ]
        .map(String::from);
        assert_eq!(
            super::unknown_variables(names.into_iter()),
            [
                ("TENANTRY_FOO".to_owned(), None),
                (
                    "TENANTRY_MAX_CONECTIONS".to_owned(),
                    Some("TENANTRY_MAX_CONNECTIONS".to_owned())
                ),
            ]
        );
    }

    /// Every variable a flag of any command reads is known (no warning for
    /// a setting tenantry itself documents).
    #[test]
    fn no_variable_of_a_flag_is_called_unknown() {
        use clap::CommandFactory;
        fn envs(c: &clap::Command, out: &mut Vec<String>) {
            for a in c.get_arguments() {
                if let Some(e) = a.get_env() {
                    out.push(e.to_string_lossy().into_owned());
                }
            }
            for s in c.get_subcommands() {
                envs(s, out);
            }
        }
        let mut all = Vec::new();
        envs(&crate::Cli::command(), &mut all);
        assert!(all.iter().any(|e| e == "TENANTRY_LOG_FORMAT"), "{all:?}");
        assert_eq!(
            super::unknown_variables(all.into_iter()),
            Vec::<(String, Option<String>)>::new()
        );
    }
}
