//! `tenantry-bench`: measures tenantry against raw PostgreSQL on the same database in one run (API vs pgbench, RLS vs explicit WHERE, logging, metrics, creation rates, memory) and reports every figure as a ratio to its baseline.

mod dataset;
mod figures;
mod handwritten;
mod load;
mod report;
mod server;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Benchmarks tenantry against PostgreSQL itself: every figure next to its
/// baseline, measured in the same run on the same database.
#[derive(Debug, Parser)]
#[command(name = "tenantry-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) The server under test, started by the benchmark itself.
    #[command(hide = true)]
    ServeChild(server::ChildArgs),
    /// (internal) The hand-written baseline server, started by the benchmark itself.
    #[command(hide = true)]
    ServeHandwritten(handwritten::ChildArgs),
}

/// Options of a benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Tiny data and one short run of everything (what the test suite runs).
    #[arg(long)]
    pub smoke: bool,
    /// Tenants in the data set (groups of 10: a root, 3 children, 6
    /// grandchildren). Default 1,000 (20 with --smoke). Beyond 1,000, the
    /// run also measures point reads over all of them against 1,000 of them
    /// (`api_point_read_<n>_tenants`).
    #[arg(long)]
    pub tenants: Option<i32>,
    /// Resources per tenant. Default 1,000; 10 when --tenants exceeds 10,000
    /// (a million tenants: 10M resources); 20 with --smoke.
    #[arg(long)]
    pub resources: Option<i32>,
    /// Request-log rows in total (30 days of history).
    #[arg(long, default_value_t = 1_000_000)]
    pub request_log_rows: i64,
    /// Concurrent clients of every load generator (pgbench -c, wrk -c).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Measurements per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also measure the schema tier (figures of issue 13): create this many
    /// schema tenants one after another (default 4,000; 20 with --smoke),
    /// pooled reads with and without them, and a tenant's online move to its
    /// schema and back. They are moved back and deleted at the end.
    #[arg(long, value_name = "N", num_args = 0..=1)]
    pub schema_tenants: Option<Option<u32>>,
    /// Keep the embedded cluster (and its loaded data) in this directory and
    /// reuse it next time; default: a temporary directory, removed afterwards.
    /// Ignored with DATABASE_URL.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A superuser connection string of a database to use instead of the
    /// embedded cluster (it is migrated and loaded).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Run only the figures whose names contain one of these (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,
}

impl Options {
    /// How many schema tenants `--schema-tenants` asks for, if given.
    pub fn schema_tenant_count(&self) -> Option<u32> {
        self.schema_tenants
            .map(|n| n.unwrap_or(if self.smoke { 20 } else { 4000 }).max(1))
    }

    /// The smoke mode's sizes and durations override the defaults (sizes
    /// given explicitly stay).
    fn effective(mut self) -> Self {
        let small = if self.smoke { 20 } else { 1000 };
        let tenants = *self.tenants.get_or_insert(small);
        self.resources
            .get_or_insert(if tenants > 10_000 { 10 } else { small });
        if self.smoke {
            self.request_log_rows = 2_000;
            self.seconds = 1;
            self.runs = 1;
            self.clients = self.clients.min(4);
        }
        self
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenantry-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Some(Command::ServeChild(args)) => runtime.block_on(server::child_main(args)),
        Some(Command::ServeHandwritten(args)) => runtime.block_on(handwritten::child_main(args)),
        None => runtime.block_on(figures::run(cli.options.effective())),
    }
}
