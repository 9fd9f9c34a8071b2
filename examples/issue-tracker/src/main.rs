//! `cargo run -p issue-tracker`: the tracker on the embedded default (a private PostgreSQL in `TENANTRY_DATA_DIR`, default `.tenantry`, the same one `tenantry serve` and the CLI use), listening on `ISSUE_TRACKER_LISTEN` (default 127.0.0.1:8090) until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use issue_tracker::{Application, Settings};
use tenantry_db::local::{LocalCluster, DEFAULT_DATA_DIR};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tokio_postgres=warn".into()),
        )
        .init();
    let data_dir = std::env::var_os("TENANTRY_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = std::env::var("ISSUE_TRACKER_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8090".into())
        .parse()
        .context("ISSUE_TRACKER_LISTEN")?;
    let cluster = LocalCluster::open(&data_dir, None).await?;
    let shutdown = tenantry_axum::shutdown_signal();
    let app = Application::build(&Settings {
        listen,
        migration: cluster.superuser_config(),
        server: cluster.server_config(),
    })
    .await?;
    let addr = app.local_addr();
    println!("issue tracker on http://{addr} (projects, issues, comments; Ctrl-C stops it)");
    println!("a tenant and its key, with the same data directory:");
    println!("  cargo run -p tenantry-cli -- tenant create acme");
    println!("  cargo run -p tenantry-cli -- key create <tenant id>");
    println!("  curl -H 'Authorization: Bearer <key>' -H 'Content-Type: application/json' \\");
    println!("       -d '{{\"name\":\"Launch\"}}' http://{addr}/projects");
    app.run(shutdown).await?;
    drop(cluster);
    Ok(())
}
