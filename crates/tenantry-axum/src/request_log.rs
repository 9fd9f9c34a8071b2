//! The request log: [`RequestIdLayer`], which gives every request its id (echoed in the response and in problem bodies), and [`RequestLogLayer`], the tower layer that times every request, writes its one log line, counts it by route and status, and hands the rows of requests a tenant made to a bounded in-process queue that requests append to without waiting, flushed to `tenantry.request_log` in batches by one background task; a full queue drops and counts. Also the upkeep of what is built from it: usage metrics refreshed, partitions kept ahead.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::tenant_stats::{TenantStats, TenantStatsConfig};
use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::{header, HeaderName, HeaderValue},
    response::Response,
};
use futures_util::FutureExt;
use tenantry_db::{Database, DbError, KeyId, RequestLogEntry, ResourceId, TenantId, UserId};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::Instrument;

use crate::error::ApiError;

/// The header that carries a request's id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id: what a client sent as `X-Request-Id` when it is 1 to
/// [`RequestId::MAX_LEN`] characters of `A-Z a-z 0-9 . _ : -` (UUIDs, ULIDs,
/// W3C trace ids and most proxies' ids), else a UUID made for the request.
/// Anything else a client sends (spaces, quotes, control characters, an
/// overlong value) never reaches a log line or the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Longest id kept from a client (the `request_log.request_id` CHECK).
    pub const MAX_LEN: usize = 128;

    /// The id if `value` is well-formed.
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = (1..=Self::MAX_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        well_formed.then(|| Self(value.into()))
    }

    /// A new id (UUID v4), from the thread's CSPRNG: `Uuid::new_v4` asks the
    /// kernel (`getrandom`) on every call, one system call per request.
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string()
                .into(),
        )
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outermost layer of a router: takes the request's id from
/// `X-Request-Id` when well-formed or makes one ([`RequestId`]), puts it in
/// the request's extensions (the request log and handlers read it there),
/// runs the request in a `request` span carrying it (every event logged while
/// it runs names it), echoes it in the response's `X-Request-Id` and writes it
/// into the body of every problem ([`ApiError`]) as `request_id`. Apply it
/// with `Router::layer` after every other layer, so that fallbacks and
/// panics caught by an inner layer get it too.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S> tower::Service<Request> for RequestIdService<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let id = request
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate);
        // Only well-formed ids go on: what inner layers read is what we echo.
        let value = HeaderValue::from_str(id.as_str()).expect("a request id is a valid header");
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, value.clone());
        request.extensions_mut().insert(id.clone());
        // Named and completed by the request log's layer once the route and
        // status are known (OpenTelemetry's HTTP server conventions). At
        // ERROR, so that it is on whenever a line logged inside it is: at
        // INFO, `RUST_LOG=warn` turned it off and a request's warnings lost
        // the request_id its problem body quotes (an on-call review).
        let span = tracing::error_span!(
            target: "tenantry::request",
            "request",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            http.request.method = %shown_method(request.method()),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            request_id = %id,
        );
        Box::pin(
            async move {
                let mut response = inner.call(request).await?;
                if let Some(error) = response.extensions().get::<ApiError>() {
                    let mut problem = error.problem();
                    problem.request_id = Some(id.as_str().to_owned());
                    if let Ok(body) = serde_json::to_vec(&problem) {
                        response.headers_mut().remove(header::CONTENT_LENGTH);
                        *response.body_mut() = Body::from(body);
                    }
                }
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

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
    /// Refused by the tenant's request rate (`rate_limit_per_second`).
    rate_limited: bool,
    /// The request's turn among its tenant's requests in flight, held
    /// until its answer is sent ([`LogSlot::hold_turn`]).
    turn: Option<Arc<tenantry_db::turns::Turn>>,
}

impl LogSlot {
    /// The tenant's request rate refused this request: it writes no
    /// request-log row (see [`RequestLogLayer`]).
    pub(crate) fn set_rate_limited(&self) {
        self.0.lock().expect("log slot").rate_limited = true;
    }

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

    /// Keeps the request's turn among its tenant's requests in flight until
    /// its answer's body has been sent or dropped: a tenant reading its
    /// answers slowly on many connections held them all in the server's
    /// memory, every one out of its turns once its handler returned (a
    /// review of noisy neighbours grew the server by 1.4 GB on 495 slow
    /// reads of one tenant's pages).
    pub(crate) fn hold_turn(&self, turn: tenantry_db::turns::Turn) {
        self.0.lock().expect("log slot").turn = Some(Arc::new(turn));
    }

    fn take_turn(&self) -> Option<Arc<tenantry_db::turns::Turn>> {
        self.0.lock().expect("log slot").turn.take()
    }

    pub(crate) fn set_resource(&self, id: ResourceId) {
        self.0.lock().expect("log slot").resource = Some(id);
    }

    fn fields(&self) -> SlotFields {
        self.0.lock().expect("log slot").clone()
    }
}

/// An answer's body holding its request's turn among the tenant's requests
/// in flight until hyper has taken its last bytes to send. Handed out in
/// slices of [`SENT_SLICE`] (of the same buffer, not copied): hyper asks for
/// the next one only when its own write buffer has room, so the turn lasts
/// until all but the last few slices have left for the client. (A body
/// handed out whole was taken by hyper at once and dropped while its bytes
/// still waited in hyper's queue for a client that did not read.)
struct SentUnderTurn {
    inner: Body,
    /// What hyper has not taken yet of the inner body's last data frame.
    pending: axum::body::Bytes,
    _turn: Arc<tenantry_db::turns::Turn>,
}

/// The bytes [`SentUnderTurn`] hands hyper at a time.
const SENT_SLICE: usize = 64 * 1024;

impl SentUnderTurn {
    fn new(inner: Body, turn: Arc<tenantry_db::turns::Turn>) -> Self {
        Self {
            inner,
            pending: axum::body::Bytes::new(),
            _turn: turn,
        }
    }

    fn next_slice(&mut self) -> http_body::Frame<axum::body::Bytes> {
        let n = self.pending.len().min(SENT_SLICE);
        http_body::Frame::data(self.pending.split_to(n))
    }
}

impl http_body::Body for SentUnderTurn {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Some(Ok(self.next_slice())));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    self.pending = data;
                    Poll::Ready(Some(Ok(self.next_slice())))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = http_body::Body::size_hint(&self.inner);
        let pending = self.pending.len() as u64;
        match inner.exact() {
            Some(n) => http_body::SizeHint::with_exact(n + pending),
            None => {
                let mut hint = http_body::SizeHint::new();
                hint.set_lower(inner.lower() + pending);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + pending);
                }
                hint
            }
        }
    }
}

/// The sending side, shared by all requests.
#[derive(Clone)]
pub struct RequestLog {
    tx: mpsc::Sender<RequestLogEntry>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    /// Rows the flusher took from the queue and has not written or dropped
    /// yet (a batch being written, or retried while the database is away).
    in_flight: Arc<AtomicUsize>,
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
            in_flight: Arc::new(AtomicUsize::new(0)),
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
            log.in_flight.clone(),
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

    /// Rows waiting to be written: in the queue, and the batch being
    /// written or retried (while the database is away, the queue alone read
    /// as one batch fewer than were waiting, and 0 with a batch of rows in
    /// doubt).
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity() + self.in_flight.load(Ordering::Relaxed)
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
    in_flight: Arc<AtomicUsize>,
) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        // Wait for the first row, then gather what else is already queued.
        if rx.recv_many(&mut buf, batch).await == 0 {
            break; // every sender dropped and the queue is empty
        }
        in_flight.store(buf.len(), Ordering::Relaxed);
        if buf.len() < batch {
            tokio::time::sleep(Duration::from_millis(20)).await;
            while buf.len() < batch {
                match rx.try_recv() {
                    Ok(e) => buf.push(e),
                    Err(_) => break,
                }
            }
        }
        in_flight.store(buf.len(), Ordering::Relaxed);
        write(&db, &mut buf, &written, &dropped).await;
        in_flight.store(0, Ordering::Relaxed);
    }
}

/// How long a batch is retried while the database cannot take it, before
/// its rows are dropped. Rows that arrive meanwhile wait in the queue (its
/// bound, `request_log_queue`, drops and counts what does not fit).
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Writes a batch, retrying while the database is unavailable (for up to
/// [`RETRY_FOR`]: until 2026-12-04 five tries within about 10 s, so a
/// database restart of a quarter of a minute lost the rows of the requests
/// around it, found by a failure review), then drops it with an error that
/// says how many rows were lost.
async fn write(
    db: &Database,
    buf: &mut Vec<RequestLogEntry>,
    written: &AtomicU64,
    dropped: &AtomicU64,
) {
    let started = tokio::time::Instant::now();
    let mut attempt = 0u32;
    // One id for every try of this batch: a try after one whose commit was
    // in doubt (the connection lost once COMMIT was sent) appends nothing if
    // that one committed (found by a resilience review: usage counted such a
    // batch's requests twice).
    let batch = uuid::Uuid::new_v4();
    let reason = loop {
        match db.log_request_batch(buf, batch).await {
            Ok(n) => {
                written.fetch_add(n, Ordering::Relaxed);
                buf.clear();
                return;
            }
            Err(
                e @ (DbError::Unavailable(_) | DbError::Contention(_) | DbError::TenantBusy(_)),
            ) if started.elapsed() < RETRY_FOR => {
                tracing::warn!(error = %e, rows = buf.len(), attempt, "request log write failed; retrying");
                let wait =
                    Duration::from_millis(200 * u64::from(attempt + 1)).min(Duration::from_secs(2));
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => break e,
        }
    };
    tracing::error!(
        error = %reason,
        rows = buf.len(),
        "request log rows dropped: the database did not take them (counted in tenantry_request_log_dropped_total)"
    );
    dropped.fetch_add(buf.len() as u64, Ordering::Relaxed);
    metrics::counter!("tenantry_request_log_dropped_total").increment(buf.len() as u64);
    buf.clear();
}

/// The tower layer of every tenant route: times the request, writes its one
/// log line (target `tenantry::request`, level INFO: method, route template,
/// status, latency, tenant and key ids, request id; never a credential),
/// counts it in the `tenantry_http_requests_total` and
/// `tenantry_http_request_duration_seconds` metrics by matched route and
/// status, and writes a request-log row for each request that
/// [`TenantCaller`](crate::TenantCaller) attributed to a tenant (its usage and
/// audit trail). A handler under it that panics is answered 500
/// problem+json (`internal_error`), logged at ERROR with the panic's message,
/// and counted and recorded like any other request. Apply it with `Router::route_layer`, so the matched route is
/// known (a request no route matched is logged as `unmatched`), under
/// [`RequestIdLayer`]. Build it with [`Tenantry::layer`](crate::Tenantry::layer).
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
            // Methods of HTTP itself by name, any other as one value: a
            // label per made-up method would grow /metrics without bound
            // (an outside review grew it from 0.8 to 34.5 MB).
            let sent = shown_method(request.method()).into_owned();
            let method = match request.method().as_str() {
                m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS"
                | "TRACE" | "PATCH") => m.to_owned(),
                _ => "_OTHER".to_owned(),
            };
            let request_id = request.extensions().get::<RequestId>().cloned();
            // The client as tenantry_axum::serve tells it (behind a trusted
            // proxy, whom it forwarded for; a trusted proxy that said nothing
            // readable, itself), else the peer.
            let client = crate::serve::ClientAddr::of_request(request.extensions())
                .0
                .or_else(|| crate::serve::peer_of_request(request.extensions()));
            let slot = LogSlot::default();
            request.extensions_mut().insert(slot.clone());
            // The request's span (RequestIdLayer's) gets its name now, before
            // any child span starts it: a started span keeps its name.
            let span = tracing::Span::current();
            span.record("otel.name", format!("{method} {route}"));
            span.record("http.route", route.as_str());

            // A handler that panics is answered here, inside the request
            // log and under RequestIdLayer: its 500 carries the request's
            // id and is a log line and a request-log row like any other
            // (found by a review as a team's developer: caught by `serve`'s
            // outer layer alone, it had no id and no row).
            // (`call` itself inside the catch: a service that panics there
            // is answered here too.)
            let response = match std::panic::AssertUnwindSafe(
                async move { inner.call(request).await },
            )
            .catch_unwind()
            .await
            {
                Ok(answered) => answered?,
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|m| (*m).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(route = %route, panic = %message, "a handler panicked: answered 500");
                    crate::error::panicked(payload)
                }
            };

            // The tenant's turn goes with the answer's body, to its end.
            let response = match slot.take_turn() {
                Some(turn) => response.map(|body| Body::new(SentUnderTurn::new(body, turn))),
                None => response,
            };
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            metrics::counter!("tenantry_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
                .increment(1);
            metrics::histogram!("tenantry_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
                .record(elapsed.as_secs_f64());
            let fields = slot.fields();
            span.record("http.response.status_code", status);
            tracing::info!(
                target: "tenantry::request",
                method = %sent,
                route = %route,
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                tenant_id = fields.tenant.as_ref().map(tracing::field::display),
                key_id = fields.key.as_ref().map(tracing::field::display),
                request_id = request_id.as_ref().map(tracing::field::display),
                client = client.as_ref().map(tracing::field::display),
                "request"
            );
            if let Some(tenant_id) = fields.tenant {
                log.stats.record(tenant_id, status, elapsed);
            }
            // A request refused by the tenant's request rate is counted
            // above and in its log line, and writes no row: a client that
            // ignores 429 wrote a row (and its WAL) per refusal, some 300 GB
            // a day at full speed on the disk every tenant shares (found by a
            // contention review). Other 429s (the child-creation rate, a
            // team's own handler) are rows as before.
            if let Some(tenant_id) = fields.tenant.filter(|_| !fields.rate_limited) {
                log.record(RequestLogEntry {
                    tenant_id,
                    created_at: arrived,
                    user_id: fields.user,
                    resource_id: fields.resource,
                    method: sent,
                    route,
                    status: status as i16,
                    latency_ms: elapsed.as_secs_f64() * 1000.0,
                    key_id: fields.key,
                    impersonator: fields.impersonator.map(|i| i.to_string()),
                    request_id: request_id.map(|id| id.as_str().to_owned()),
                });
            }
            Ok(response)
        })
    }
}

/// The upkeep every `every` until `stop`'s sender is dropped: a week of
/// request-log partitions kept ahead (and, every [`RETENTION_EVERY_RUNS`]
/// runs, those older than `keep_days` dropped, if given),
/// then the usage metrics refreshed from
/// the request log, each in a transaction of its own as the administrative
/// actor `scheduler`. A partition's creation locks the whole log: it waits
/// at most 100 ms for that lock (2 s for today's and tomorrow's), commits at once (it was held through the
/// metrics' refresh, seconds over a busy log, while every tenant's usage
/// read and the log's writer waited: found by a review), and a day it could
/// not lock is tried again at the next run; the refresh and the doctor wait
/// at most [`UPKEEP_LOCK_WAIT`] for each of theirs. A failed run is logged
/// and the next one tries again.
pub(crate) async fn upkeep(
    db: tenantry_db::Database,
    every: std::time::Duration,
    keep_days: Option<u32>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut runs: u64 = 0;
    let mut refresh_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        // Each its own: a failed partition step (another server's upkeep
        // holding the claims, a lock not had) skipped the refresh.
        let partitions = async {
            let mut scope = db.admin("scheduler").await?;
            scope.ensure_request_log_partitions(7).await?;
            scope.commit().await
        }
        .await;
        if let Err(e) = partitions {
            tracing::warn!(error = %e, "the upkeep's request-log partitions failed; tried again at the next run");
        }
        days_without_partition(&db).await;
        if tokio::time::Instant::now() >= refresh_due {
            let started = tokio::time::Instant::now();
            let refreshed = async {
                let mut scope = db.admin("scheduler").await?;
                scope
                    .usage_upkeep_within(Some(UPKEEP_LOCK_WAIT), Some(REFRESH_TIME_LIMIT))
                    .await?;
                scope.commit().await
            }
            .await;
            let took = started.elapsed();
            // A refresh that counts many hours (the first after an upgrade)
            // or copies a large tenant_metrics may be long: one that takes a
            // tenth of the interval or more runs at most every ten times its
            // length, so that it never takes the database's CPU for good.
            let wait = every.max(took * REFRESH_SPACING);
            refresh_due = started + wait;
            match refreshed {
                Err(e) => {
                    metrics::counter!("tenantry_usage_refresh_failures_total").increment(1);
                    tracing::warn!(
                        error = %e,
                        next_in_s = wait.as_secs(),
                        "the upkeep's metrics refresh failed; tried again after the wait it says"
                    );
                }
                Ok(()) => {
                    metrics::gauge!("tenantry_usage_refresh_seconds").set(took.as_secs_f64());
                    if wait > every {
                        tracing::warn!(
                            took_ms = took.as_millis() as u64,
                            next_in_s = wait.as_secs(),
                            "the usage metrics' refresh is slow for its interval: it runs less often"
                        );
                    }
                }
            }
        }
        if let (Some(keep_days), 0) = (keep_days, runs % RETENTION_EVERY_RUNS) {
            retention(&db, keep_days).await;
        }
        // At the first run too, though `tenantry serve` ran the doctor just
        // before: `tenantry_table_problems` is on `/metrics` from the start
        // (it was missing for the first ten minutes: a review of the docs).
        if runs % DOCTOR_EVERY_RUNS == 0 {
            doctor(&db).await;
        }
        runs += 1;
    }
}

/// Says whether today or tomorrow still lacks a request-log partition after
/// the upkeep's try (a day whose lock stayed busy is left with only a NOTICE
/// in the database): `tenantry_request_log_days_without_partition` and a
/// WARN line while it is above 0. Such a day's rows go to the default
/// partition, where they stay.
async fn days_without_partition(db: &tenantry_db::Database) {
    let missing = async {
        let mut scope = db.admin("scheduler").await?;
        let missing = scope.request_log_days_without_partition().await?;
        scope.commit().await?;
        Ok::<_, DbError>(missing)
    }
    .await;
    match missing {
        Ok(missing) => {
            metrics::gauge!("tenantry_request_log_days_without_partition").set(f64::from(missing));
            if missing > 0 {
                tracing::warn!(
                    days = missing,
                    "today or tomorrow has no request-log partition yet (its lock stayed busy): \
                     their rows go to the default partition; tried again at the next run"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "the upkeep's check of request-log partitions failed"),
    }
}

/// How many upkeep runs apart the doctor runs (ten minutes at the default
/// minute).
const DOCTOR_EVERY_RUNS: u64 = 10;

/// How long the usage metrics' refresh may run (its statement timeout,
/// lifted from the server's 30 s for it alone).
const REFRESH_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A refresh runs again at the soonest this many times its own length
/// after it began (or at the next upkeep run, if that is later).
const REFRESH_SPACING: u32 = 10;

/// How often, in upkeep runs, the request log's retention runs: at the
/// first, then about hourly at the default `metrics_refresh_secs` (a day's
/// partition is dropped within the hour after it ages out).
const RETENTION_EVERY_RUNS: u64 = 60;

/// Drops the request log's partitions older than `keep_days` (nothing
/// did: the log grew without end while the usage routes said it kept 30
/// days, found by a soak review), waiting at most 100 ms for the log's
/// lock, as a partition's creation does; a run that could not lock it
/// leaves the drop to the next.
async fn retention(db: &tenantry_db::Database, keep_days: u32) {
    let dropped = async {
        let mut scope = db.admin("scheduler").await?;
        let dropped = scope
            .drop_request_log_partitions_waiting(
                keep_days,
                Some(std::time::Duration::from_millis(100)),
            )
            .await?;
        scope.commit().await?;
        Ok::<_, DbError>(dropped)
    }
    .await;
    match dropped {
        Ok(0) => {}
        // Said by default (the server's log shows this target's INFO lines).
        Ok(n) => tracing::info!(
            target: "tenantry::serve",
            partitions = n,
            keep_days,
            "the request log's retention dropped its oldest days"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the request log's retention failed; tried again at its next run")
        }
    }
}

/// Longest wait of the upkeep's metrics refresh and doctor for each lock:
/// past it the step gives up until the next run. Unbounded, a session
/// holding the request log, the usage view or an adopted table held up
/// every later step (the partitions of the coming days among them) on a
/// pool without a `statement_timeout`.
const UPKEEP_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The doctor's rules, checked again while serving: a server checked them
/// only at start, so a partition created later without row level security,
/// or `DISABLE ROW LEVEL SECURITY` run while it served, went unsaid until the
/// next restart (found by an outside review). Each finding that would stop a
/// start is an ERROR line with its fix, and `tenantry_table_problems` says
/// how many there are (an alert belongs there).
async fn doctor(db: &tenantry_db::Database) {
    match db.table_problems_waiting(Some(UPKEEP_LOCK_WAIT)).await {
        Ok(problems) => {
            let blocking: Vec<_> = problems.iter().filter(|p| p.blocks_serving()).collect();
            metrics::gauge!("tenantry_table_problems").set(blocking.len() as f64);
            for p in blocking {
                tracing::error!(
                    table = %p.table,
                    rule = %p.rule,
                    problem = %p.problem,
                    fix = %p.fix,
                    "a table or login breaks tenantry's rules (tenantry doctor): a restart would refuse to serve"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "the doctor's check of adopted tables failed"),
    }
}

/// A request's method as the log shows it: whole up to 32 characters, cut after
/// that (a client's made-up method of 60 KiB wrote it twice into one log
/// line, past journald's and Docker's line limits: an on-call review).
fn shown_method(method: &axum::http::Method) -> std::borrow::Cow<'_, str> {
    let sent = method.as_str();
    match sent.char_indices().nth(32) {
        None => sent.into(),
        Some((cut, _)) => format!("{}…", &sent[..cut]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warning logged while a request runs carries its request_id with
    /// `RUST_LOG=warn` too (the request span was INFO, off under that
    /// filter), and a made-up method of any length is logged cut short.
    #[test]
    fn a_requests_warning_carries_its_request_id_under_a_warn_filter_and_long_methods_are_cut() {
        #[derive(Clone, Default)]
        struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let method = format!("X{}", "A".repeat(5_000));
        tracing::subscriber::with_default(subscriber, || {
            let service = tower::service_fn(|_: Request| async {
                tracing::warn!("the database is away");
                Ok::<_, std::convert::Infallible>(Response::new(axum::body::Body::empty()))
            });
            let mut service = tower::Layer::layer(&RequestIdLayer, service);
            let request = axum::http::Request::builder()
                .method(method.as_str())
                .uri("/v1/resources")
                .header(REQUEST_ID_HEADER, "ticket-4711")
                .body(axum::body::Body::empty())
                .unwrap();
            futures_util::FutureExt::now_or_never(tower::Service::call(&mut service, request))
                .expect("answered at once")
                .unwrap();
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            log.contains("the database is away") && log.contains("ticket-4711"),
            "{log}"
        );
        assert!(log.len() < 1_000, "{} bytes: {log}", log.len());
    }

    /// While the database is away, the batch the flusher took and retries
    /// is still waiting: the depth counts it with the queue.
    #[tokio::test]
    async fn a_batch_retried_while_the_database_is_away_counts_in_the_depth() {
        let db = tenantry_db::testing::unreachable_database();
        let (log, _flusher) = RequestLog::start(db, 10, 2);
        let tenant = tenantry_db::TenantId::from_uuid(uuid::Uuid::new_v4());
        for _ in 0..3 {
            log.record(RequestLogEntry::new(
                tenant,
                "GET",
                "/v1/resources",
                200,
                1.0,
            ));
        }
        // The flusher takes a batch of two at once and retries it (a
        // database that refuses connections is unavailable, retried for 60 s).
        for _ in 0..20 {
            assert_eq!(log.depth(), 3);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!((log.written(), log.dropped()), (0, 0));
    }

    #[test]
    fn request_ids_keep_what_log_pipelines_and_the_table_accept_and_nothing_else() {
        for good in [
            "a",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "req_1.2:3-x",
            &"x".repeat(RequestId::MAX_LEN),
        ] {
            assert_eq!(RequestId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            &"x".repeat(RequestId::MAX_LEN + 1),
            "has space",
            "quote\"",
            "new\nline",
            "semi;colon",
            "Root=1-5759e988",
            "é",
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?} was accepted");
        }
        let made = RequestId::generate();
        assert!(RequestId::parse(made.as_str()).is_some());
        let parsed = uuid::Uuid::parse_str(made.as_str()).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(made, RequestId::generate());
    }
}
