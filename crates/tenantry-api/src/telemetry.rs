//! Observability of the HTTP layer: the Prometheus recorder behind `/metrics`, and (feature `otlp`) trace export over OTLP. Timing and counting every request, its log line and its request-log row, are `tenantry_axum::RequestLogLayer`'s.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("tenantry_http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            )
            .expect("valid buckets")
            .install_recorder()
            .inspect(|_| {
                describe();
                initial_values();
            })
            .expect("no other metrics recorder is installed")
    })
}

/// The `# HELP` line of every series the server writes (an operations
/// review found 11 of 15 families without one).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tenantry_http_requests_total",
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        "tenantry_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route template and method."
    );
    describe_counter!(
        "tenantry_request_log_dropped_total",
        "Request-log rows dropped: the queue was full, or the database refused a batch for 60 s (logged as an ERROR). Alert when it grows."
    );
    describe_counter!(
        "tenantry_request_log_written_total",
        "Request-log rows written to the database."
    );
    describe_gauge!(
        "tenantry_request_log_queue_depth",
        "Request-log rows waiting to be written: queued, and the batch being written or retried while the database is away."
    );
    describe_gauge!(
        "tenantry_db_pool_size",
        "Connections the database pool holds (in use and idle)."
    );
    describe_gauge!(
        "tenantry_db_pool_available",
        "Idle connections of the database pool."
    );
    describe_gauge!(
        "tenantry_db_pool_max",
        "Connections the pool may hold now: max_connections, less those withheld for 30 s after the database had no connection slot left."
    );
    describe_counter!(
        "tenantry_db_connections_refused_total",
        "Connections the database refused the pool for want of a connection slot (53300); each narrows the pool to the connections it has for 30 s."
    );
    describe_gauge!(
        "tenantry_db_pool_waiting",
        "Requests waiting for a connection of the pool."
    );
    describe_gauge!(
        "tenantry_table_problems",
        "Doctor findings (adopted tables, tenantry's own tables, logins acting for tenants) that would stop a start, as of the last check while serving (the first upkeep run and every tenth after it; none without the upkeep, metrics_refresh_secs = 0); each is logged as an ERROR with its fix."
    );
    describe_gauge!(
        "tenantry_request_log_days_without_partition",
        "Of today and tomorrow, the days without a request-log partition after the last upkeep run (its lock stayed busy); their rows go to the default partition. Alert when above 0 for several runs."
    );
    describe_gauge!(
        "tenantry_invalidation_listening",
        "1 while the invalidation listener listens (other servers' revocations, suspensions and role changes reach this one at once), 0 while it reconnects (they reach it as its caches expire, within about 1 s). Alert when 0 for more than a minute."
    );
    describe_counter!(
        "tenantry_invalidation_reconnects_total",
        "Times the invalidation listener connected again after losing its connection (each empties every cache)."
    );
    describe_gauge!(
        "tenantry_key_cache_entries",
        "API keys verified and cached in this process."
    );
    describe_gauge!(
        "tenantry_context_parts_cached",
        "Tenants whose context part (schema, visible subtree) this process has cached."
    );
    describe_counter!(
        "tenantry_unavailable_total",
        "503 answers by cause: database (out of reach, read-only, a statement over its timeout, or /readyz not ready), tenant_busy (one tenant's, person's or the credential checks' share of the pool taken: that tenant's load, not an outage), contention (rolled back by a concurrent transaction, or a lock not free in time, after the retries), misconfigured (the log says why), identity_provider, shutting_down."
    );
    describe_gauge!(
        "tenantry_usage_refresh_seconds",
        "How long this server's last successful refresh of the usage metrics took (tenant_metrics, from 30 days of the request log). One that takes a tenth of metrics_refresh_secs or more runs at most every ten times its length."
    );
    describe_counter!(
        "tenantry_usage_refresh_failures_total",
        "This server's refreshes of the usage metrics that failed (a lock not had within 5 s, the database away, 10 minutes passed); usage figures are as of the last one that succeeded. Alert when it grows run after run."
    );
    describe_gauge!(
        "tenantry_build_info",
        "Always 1: the build's package version and the schema it migrates to (newest migration, digest of its definitions), as `tenantry --version` says them. Servers of two builds at once show two series."
    );
}

/// The series whose value is known at start: which build answers, and
/// every cause of a 503 at 0 (an alert on a rate finds no series before
/// the first increment).
fn initial_values() {
    let schema = tenantry_db::migrate::BuildSchema::this_build();
    metrics::gauge!(
        "tenantry_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "schema" => format!("{:04}", schema.newest),
        "definitions" => schema.definitions.clone(),
    )
    .set(1.0);
    metrics::counter!("tenantry_usage_refresh_failures_total").absolute(0);
    for cause in tenantry_axum::ApiError::UNAVAILABLE_CAUSES {
        metrics::counter!("tenantry_unavailable_total", "cause" => *cause).absolute(0);
    }
}

/// Trace export over OTLP/HTTP (protobuf), behind the cargo feature `otlp`:
/// each request is a span named `<method> <route template>` (OpenTelemetry's
/// HTTP server conventions: `http.request.method`, `http.route`,
/// `http.response.status_code`, plus `request_id`), and each database flight
/// a `db.flight` span inside it. Only the targets `tenantry::request` and
/// `tenantry::db` are exported, whatever `RUST_LOG` says.
#[cfg(feature = "otlp")]
pub mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
    use tracing_subscriber::{filter::Targets, registry::LookupSpan, Layer};

    /// Why the exporter could not be built (an endpoint that is no URL).
    #[derive(Debug, thiserror::Error)]
    #[error("otlp_endpoint: {0}")]
    pub struct OtlpError(String);

    /// The running exporter: flush it before the process ends.
    pub struct Exporter {
        provider: SdkTracerProvider,
    }

    impl Exporter {
        /// Sends every span ended so far (blocks; call it off the async runtime's threads).
        pub fn flush(&self) {
            if let Err(e) = self.provider.force_flush() {
                tracing::warn!(error = %e, "flushing OTLP spans failed");
            }
        }

        /// Flushes and stops the exporter (blocks, as [`Exporter::flush`]).
        pub fn shutdown(self) {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "stopping the OTLP exporter failed");
            }
        }
    }

    /// The spans exported: requests and database flights.
    pub fn targets() -> Targets {
        Targets::new()
            .with_target("tenantry::request", tracing::Level::INFO)
            .with_target("tenantry::db", tracing::Level::INFO)
    }

    /// A tracing layer exporting [`targets`] in batches to the collector at
    /// `endpoint` (its base URL, e.g. `http://127.0.0.1:4318`: spans are
    /// POSTed to `<endpoint>/v1/traces`), as service `tenantry`.
    pub fn layer<S>(endpoint: &str) -> Result<(impl Layer<S> + Send + Sync, Exporter), OtlpError>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("tenantry").build())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tenantry"))
            // Activating a span's context on entry starts it, and a started
            // span keeps its name: the request span is named once its route
            // is known, after it was entered. No other OpenTelemetry
            // instrumentation runs in the process to need the activation.
            .with_context_activation(false)
            .with_filter(targets());
        Ok((layer, Exporter { provider }))
    }
}
