//! The request log: [`RequestLogLayer`], the tower layer that times every request, counts it by route and status, and hands the rows of requests a tenant made to a bounded in-process queue that requests append to without waiting, flushed to `tenantry.request_log` in batches by one background task; a full queue drops and counts.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::tenant_stats::{TenantStats, TenantStatsConfig};
use axum::{
    extract::{MatchedPath, Request},
    response::Response,
};
use tenantry_db::{Database, KeyId, RequestLogEntry, ResourceId, TenantId, UserId};
use tokio::{sync::mpsc, task::JoinHandle};

/// What a request learns about itself while it runs (filled by the auth extractor and handlers).
#[derive(Clone, Default)]
pub struct LogSlot(Arc<Mutex<SlotFields>>);

#[derive(Default, Clone)]
struct SlotFields {
    tenant: Option<TenantId>,
    user: Option<UserId>,
    resource: Option<ResourceId>,
    key: Option<KeyId>,
    impersonator: Option<Arc<str>>,
}

impl LogSlot {
    pub(crate) fn set_caller(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        key: Option<KeyId>,
        impersonator: Option<Arc<str>>,
    ) {
        let mut f = self.0.lock().expect("log slot");
        f.tenant = Some(tenant);
        f.user = user;
        f.key = key;
        f.impersonator = impersonator;
    }

    pub(crate) fn set_resource(&self, id: ResourceId) {
        self.0.lock().expect("log slot").resource = Some(id);
    }

    fn fields(&self) -> SlotFields {
        self.0.lock().expect("log slot").clone()
    }
}

/// The sending side, shared by all requests.
#[derive(Clone)]
pub struct RequestLog {
    tx: mpsc::Sender<RequestLogEntry>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    capacity: usize,
    enabled: bool,
    stats: TenantStats,
}

impl RequestLog {
    /// Starts the flusher; returns the sender and the task (which ends after the
    /// last sender is dropped and the queue is drained).
    pub fn start(db: Database, capacity: usize, batch: usize) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let log = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            capacity,
            enabled: true,
            stats: TenantStats::new(TenantStatsConfig::default()),
        };
        let task = tokio::spawn(flush_loop(
            db,
            rx,
            batch,
            log.written.clone(),
            log.dropped.clone(),
        ));
        (log, task)
    }

    /// This log, recording nothing (setting `request_log = false`).
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// This log, counting tenants' traffic in `stats` (whether or not rows are written).
    pub fn with_tenant_stats(mut self, stats: TenantStats) -> Self {
        self.stats = stats;
        self
    }

    /// The per-tenant traffic of the busiest tenants.
    pub fn tenant_stats(&self) -> &TenantStats {
        &self.stats
    }

    /// Enqueues without waiting; counts a drop when the queue is full.
    pub fn record(&self, entry: RequestLogEntry) {
        if !self.enabled {
            return;
        }
        if self.tx.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tenantry_request_log_dropped_total").increment(1);
        }
    }

    /// Rows waiting in the queue.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// Rows dropped because the queue was full (or the database refused them).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

async fn flush_loop(
    db: Database,
    mut rx: mpsc::Receiver<RequestLogEntry>,
    batch: usize,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        // Wait for the first row, then gather what else is already queued.
        if rx.recv_many(&mut buf, batch).await == 0 {
            break; // every sender dropped and the queue is empty
        }
        if buf.len() < batch {
            tokio::time::sleep(Duration::from_millis(20)).await;
            while buf.len() < batch {
                match rx.try_recv() {
                    Ok(e) => buf.push(e),
                    Err(_) => break,
                }
            }
        }
        write(&db, &mut buf, &written, &dropped).await;
    }
}

/// Writes a batch, retrying briefly while the database is unavailable.
async fn write(
    db: &Database,
    buf: &mut Vec<RequestLogEntry>,
    written: &AtomicU64,
    dropped: &AtomicU64,
) {
    for attempt in 0..5u32 {
        match db.log_requests(buf).await {
            Ok(n) => {
                written.fetch_add(n, Ordering::Relaxed);
                buf.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = buf.len(), attempt, "request log write failed");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    dropped.fetch_add(buf.len() as u64, Ordering::Relaxed);
    metrics::counter!("tenantry_request_log_dropped_total").increment(buf.len() as u64);
    buf.clear();
}

/// The tower layer of every tenant route: times the request, counts it in the
/// `tenantry_http_requests_total` and `tenantry_http_request_duration_seconds`
/// metrics by matched route and status, and writes a request-log row for each
/// request that [`TenantCaller`](crate::TenantCaller) attributed to a tenant
/// (its usage and audit trail). Apply it with `Router::route_layer`, so the
/// matched route is known. Build it with [`Tenantry::layer`](crate::Tenantry::layer).
#[derive(Clone)]
pub struct RequestLogLayer {
    pub(crate) log: RequestLog,
}

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLogService {
            inner,
            log: self.log.clone(),
        }
    }
}

/// The service of [`RequestLogLayer`].
#[derive(Clone)]
pub struct RequestLogService<S> {
    inner: S,
    log: RequestLog,
}

impl<S> tower::Service<Request> for RequestLogService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was made ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let log = self.log.clone();
        Box::pin(async move {
            let started = Instant::now();
            let arrived = chrono::Utc::now();
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".into());
            let method = request.method().as_str().to_owned();
            let slot = LogSlot::default();
            request.extensions_mut().insert(slot.clone());

            let response = inner.call(request).await?;

            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            metrics::counter!("tenantry_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
                .increment(1);
            metrics::histogram!("tenantry_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
                .record(elapsed.as_secs_f64());
            let fields = slot.fields();
            if let Some(tenant_id) = fields.tenant {
                log.stats.record(tenant_id, status, elapsed);
                log.record(RequestLogEntry {
                    tenant_id,
                    created_at: arrived,
                    user_id: fields.user,
                    resource_id: fields.resource,
                    method,
                    route,
                    status: status as i16,
                    latency_ms: elapsed.as_secs_f64() * 1000.0,
                    key_id: fields.key,
                    impersonator: fields.impersonator.map(|i| i.to_string()),
                });
            }
            Ok(response)
        })
    }
}
