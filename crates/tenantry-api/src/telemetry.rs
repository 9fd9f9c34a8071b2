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
            .expect("no other metrics recorder is installed")
    })
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
