//! Serving a router on a TCP listener with the bounds a server facing the internet needs: a deadline for each request's headers (slow or silent clients are closed, not kept), a cap on open connections (the process never runs out of file descriptors), the peer's address as `ConnectInfo`, and graceful shutdown.
//!
//! `axum::serve` sets none of the first two: a client that sends half a
//! request header and then nothing keeps its connection (and a file
//! descriptor) for as long as it likes, and twenty thousand of them stop the
//! server from accepting anyone.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{extract::ConnectInfo, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

/// Limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a client has to send a request's headers, from the moment
    /// the server waits for them (a new connection, or one kept alive
    /// between requests): then the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; accepting waits while there are this many.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(15),
            max_connections: 10_000,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets every connection finish the request it is serving (idle
/// ones close at once) and returns when the last one has. Requests see the
/// peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    // Dropped at shutdown: every connection's receiver then sees it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    // Each connection holds a clone; closed() resolves when all are gone.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut logged_full = false;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the connections
                    // open now go on; try again in a moment.
                    if !logged_full {
                        tracing::error!(error = %e, "accepting a connection failed");
                        logged_full = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        logged_full = false;
        if slots.available_permits() == 0 {
            tracing::warn!(
                max = options.max_connections,
                "open connections at their maximum: new ones wait to be accepted"
            );
        }
        let router = router.clone();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(tower::service_fn(
                move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            router
                                .oneshot(request.map(axum::body::Body::new))
                                .await
                                .unwrap_or_else(|never| match never {}),
                        )
                    }
                },
            ));
            // HTTP/1 only (as axum::serve without its http2 feature): the
            // header deadline runs from the moment the connection waits for a
            // request, the first one included, so a client that sends nothing,
            // or a byte at a time, is closed at it.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended at shutdown");
                    }
                }
            }
            drop(open);
            drop(slot);
        });
    }
    drop(listener);
    drop(stop_tx);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}
