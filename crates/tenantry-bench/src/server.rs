//! The server under test: this binary re-executed as `serve-child`, which runs the same `tenantry_api::Application` as `tenantry serve` over the benchmark database, in its own process so its memory can be read.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context};
use clap::Args;
use tenantry_api::{config::Settings, Application};
use tenantry_db::{Database, DatabaseConfig};

/// Options of the hidden `serve-child` subcommand.
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// Connection string of the server's login role.
    #[arg(long)]
    pub database_url: String,
    /// Admin token.
    #[arg(long)]
    pub admin_token: String,
    /// Whether requests are logged to `request_log`.
    #[arg(long)]
    pub request_log: bool,
    /// Pool size.
    #[arg(long, default_value_t = 16)]
    pub max_connections: usize,
    /// Accept people's HS256 JWTs of this issuer (the secret comes from
    /// [`JWT_SECRET_ENV`], never argv); needs `--jwt-audience`.
    #[arg(long, requires = "jwt_audience")]
    pub jwt_issuer: Option<String>,
    /// The audience those JWTs must name.
    #[arg(long, requires = "jwt_issuer")]
    pub jwt_audience: Option<String>,
}

/// The environment variable carrying a JWT server child's HS256 secret.
pub const JWT_SECRET_ENV: &str = "TENANTRY_BENCH_JWT_SECRET";

/// The identity provider a server child trusts: HS256 tokens of one issuer
/// for one audience, signed with a secret made for the run.
#[derive(Clone)]
pub struct BenchIdp {
    /// `iss` of its tokens.
    pub issuer: String,
    /// `aud` of its tokens.
    pub audience: String,
    /// The shared HS256 secret (64 hex digits).
    pub secret: String,
}

impl BenchIdp {
    /// A provider with a secret made for this run.
    pub fn generate() -> Self {
        Self {
            issuer: "https://idp.tenantry-bench.invalid/".into(),
            audience: "tenantry-bench".into(),
            secret: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }
}

/// Runs the server until stdin closes (the parent exited or stopped us) or SIGTERM.
pub async fn child_main(args: ChildArgs) -> anyhow::Result<()> {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        // The bench measures requests, not the periodic refresh of tenant_metrics.
        metrics_refresh_secs: 0,
        max_connections: args.max_connections,
        ..Settings::default()
    };
    settings.request_log = args.request_log;
    if let (Some(issuer), Some(audience)) = (args.jwt_issuer, args.jwt_audience) {
        let mut jwt = tenantry_axum::jwt::JwtConfig::new(issuer, audience);
        jwt.hs256_secret = Some(
            std::env::var(JWT_SECRET_ENV)
                .with_context(|| format!("--jwt-issuer needs {JWT_SECRET_ENV}"))?,
        );
        settings.jwt = Some(jwt);
    }
    let mut config = DatabaseConfig::new(args.database_url);
    // From the environment, not argv: a process list shows arguments.
    config.context_key = std::env::var("TENANTRY_CONTEXT_KEY")
        .ok()
        .map(|k| k.parse())
        .transpose()
        .map_err(|e: tenantry_db::MalformedContextKey| {
            anyhow::anyhow!("TENANTRY_CONTEXT_KEY: {e}")
        })?;
    config.max_connections = settings.max_connections;
    config.max_connections_per_tenant = settings.max_connections_per_tenant;
    let db = Database::connect(&config)?;
    db.check_schema().await?;
    let app = Application::build(&settings, db, &args.admin_token).await?;
    println!("listening {}", app.local_addr());
    app.run(shutdown()).await?;
    Ok(())
}

/// Resolves when the parent asks a server child to stop: its stdin closes
/// (the parent exited or dropped the [`ServerChild`]) or SIGTERM arrives.
pub async fn shutdown() {
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = stdin_closed => {}
        _ = term.recv() => {}
    }
}

/// A running server child.
pub struct ServerChild {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl ServerChild {
    /// Starts `<this exe> serve-child` and waits for its address.
    pub fn start(
        database_url: &str,
        context_key: &tenantry_db::ContextKey,
        admin_token: &str,
        request_log: bool,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let max_connections = max_connections.to_string();
        let mut args = vec![
            "serve-child",
            "--database-url",
            database_url,
            "--admin-token",
            admin_token,
            "--max-connections",
            &max_connections,
        ];
        if request_log {
            args.push("--request-log");
        }
        Self::spawn(&args, &[("TENANTRY_CONTEXT_KEY", &context_key.expose())])
    }

    /// Starts `<this exe> serve-child` with request logging that also
    /// accepts `idp`'s tokens, as `tenantry serve` with `[jwt]` settings.
    pub fn start_with_idp(
        database_url: &str,
        context_key: &tenantry_db::ContextKey,
        admin_token: &str,
        max_connections: usize,
        idp: &BenchIdp,
    ) -> anyhow::Result<Self> {
        let max_connections = max_connections.to_string();
        let args = [
            "serve-child",
            "--database-url",
            database_url,
            "--admin-token",
            admin_token,
            "--max-connections",
            &max_connections,
            "--request-log",
            "--jwt-issuer",
            &idp.issuer,
            "--jwt-audience",
            &idp.audience,
        ];
        Self::spawn(
            &args,
            &[
                ("TENANTRY_CONTEXT_KEY", &context_key.expose()),
                (JWT_SECRET_ENV, &idp.secret),
            ],
        )
    }

    /// Starts `<this exe> <args>` (a server subcommand that prints
    /// `listening <addr>` once it accepts connections) and waits for its address.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the benchmark binary")?;
        let mut child = Command::new(exe)
            .args(args)
            // From the environment, not argv: a process list shows arguments.
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the server child ({})", args[0]))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the server child {} did not start (said {line:?})", args[0]);
        };
        Ok(Self {
            url: format!("http://{addr}"),
            child,
        })
    }

    /// Resident memory now and at its peak, in MiB (`VmRSS`, `VmHWM`).
    pub fn memory_mb(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} missing in /proc status"))?;
            let kb: f64 = line
                .split_whitespace()
                .nth(1)
                .context("malformed /proc status")?
                .parse()?;
            Ok(kb / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for ServerChild {
    /// Closing stdin asks the child to shut down gracefully; then wait for it.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
