//! The request log: a bounded in-process queue that requests append to without waiting, flushed to `tenantry.request_log` in batches by one background task; a full queue drops and counts.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tenantry_db::{Database, RequestLogEntry, ResourceId, TenantId, UserId};
use tokio::{sync::mpsc, task::JoinHandle};

/// What a request learns about itself while it runs (filled by the auth extractor and handlers).
#[derive(Clone, Default)]
pub struct LogSlot(Arc<Mutex<SlotFields>>);

#[derive(Default, Clone, Copy)]
struct SlotFields {
    tenant: Option<TenantId>,
    user: Option<UserId>,
    resource: Option<ResourceId>,
}

impl LogSlot {
    pub(crate) fn set_caller(&self, tenant: TenantId, user: Option<UserId>) {
        let mut f = self.0.lock().expect("log slot");
        f.tenant = Some(tenant);
        f.user = user;
    }

    pub(crate) fn set_resource(&self, id: ResourceId) {
        self.0.lock().expect("log slot").resource = Some(id);
    }

    pub(crate) fn fields(&self) -> (Option<TenantId>, Option<UserId>, Option<ResourceId>) {
        let f = *self.0.lock().expect("log slot");
        (f.tenant, f.user, f.resource)
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
