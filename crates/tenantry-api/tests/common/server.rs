//! The tenantry server on port 0, built as `tenantry serve` builds it, for every test binary that drives it over HTTP; stopped gracefully (in-flight requests answered, request log flushed) when asked.

use std::time::Duration;

use tenantry_api::{config::Settings, Application};
use tenantry_db::Database;
use tokio::{
    sync::oneshot,
    task::{JoinError, JoinHandle},
    time::error::Elapsed,
};

/// Settings of a test server: any free port, no metrics refresh loop.
pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_refresh_secs: 0,
        ..Default::default()
    }
}

/// A running server.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// How a stopped server ended: `Err` when it did not stop within a minute,
/// `Ok(Err(_))` when its task panicked, else what `Application::run` returned.
pub type Stopped = Result<Result<std::io::Result<()>, JoinError>, Elapsed>;

impl Server {
    /// Builds the application over `database` and serves it in a task.
    pub async fn start(settings: &Settings, database: Database, admin_token: &str) -> Self {
        let app = Application::build(settings, database, admin_token)
            .await
            .expect("building the application");
        let base = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks for a graceful stop and waits for it, at most a minute; `None`
    /// when it was stopped before.
    pub async fn stop(&mut self) -> Option<Stopped> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take()?;
        Some(tokio::time::timeout(Duration::from_secs(60), task).await)
    }
}
