//! The log's guard against the PostgreSQL driver: at DEBUG, `tokio_postgres` logs every statement's parameters (API keys' lookup hashes, context proofs, request bodies), so [`driver_cap`] keeps it at INFO unless `RUST_LOG` names it; `tenantry serve` and the example app use it, and so should an application's log.
//!
//! ```no_run
//! use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
//!
//! let rust_log = std::env::var("RUST_LOG").ok();
//! let filter = tracing_subscriber::EnvFilter::try_new(rust_log.as_deref().unwrap_or("info"))
//!     .unwrap_or_else(|_| "info".into());
//! tracing_subscriber::registry()
//!     .with(
//!         tracing_subscriber::fmt::layer()
//!             .with_filter(filter)
//!             .with_filter(tenantry_axum::log::driver_cap(rust_log.as_deref())),
//!     )
//!     .init();
//! ```

/// A filter for the log's layer (beside its `EnvFilter`): the PostgreSQL
/// driver never below INFO
/// unless `RUST_LOG` (here `rust_log`) names `tokio_postgres`, and then only for the modules
/// it names (`tokio_postgres=debug`: all of them; `tokio_postgres::connect`:
/// that one). A filter of its own, not a directive of the first: a span's
/// directive (`[request]=debug`) overrode that one inside the span (found by
/// a review of this change). A name that merely contains the driver's
/// (`tokio_postgres_rustls`) lifts nothing (an on-call review: it opened
/// `tokio_postgres::query`, which logs every statement's parameters).
pub fn driver_cap(
    rust_log: Option<&str>,
) -> tracing_subscriber::filter::FilterFn<
    impl Fn(&tracing::Metadata<'_>) -> bool + Clone + Send + Sync + 'static,
> {
    fn within(target: &str, module: &str) -> bool {
        target == module
            || target
                .strip_prefix(module)
                .is_some_and(|rest| rest.starts_with("::"))
    }
    let named: Vec<String> = rust_log
        .unwrap_or_default()
        .split(',')
        .map(|directive| {
            let target = directive.split('=').next().unwrap_or_default();
            target
                .split('[')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .filter(|target| within(target, "tokio_postgres"))
        .collect();
    tracing_subscriber::filter::filter_fn(move |m: &tracing::Metadata<'_>| {
        !within(m.target(), "tokio_postgres")
            || *m.level() <= tracing::Level::INFO
            || named.iter().any(|module| within(m.target(), module))
    })
}
