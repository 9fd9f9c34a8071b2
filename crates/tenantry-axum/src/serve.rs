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

/// The most a request's line and headers may take, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

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
/// peer's address as `ConnectInfo<SocketAddr>`; a handler that panics is
/// answered 500 problem+json.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A handler that panics answers 500 problem+json (found by a team's
    // audit: the connection was dropped without an answer).
    let router = router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        crate::error::panicked,
    ));
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
                // A request's line and headers in at most 64 KiB (hyper's
                // read buffer, about 400 kB, was the only bound: 4,000
                // connections without a credential held 850 MB of the
                // server's memory, found by an HTTP review); more is
                // answered 431, complete or not.
                .max_header_size(MAX_HEAD_BYTES)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Found by a team's audit: a handler that panicked dropped the
    /// connection with no answer at all.
    #[tokio::test]
    async fn a_handler_that_panics_is_answered_500_problem_json_and_the_server_goes_on() {
        async fn boom() -> &'static str {
            panic!("a bug in a team's handler")
        }
        async fn fine() -> &'static str {
            "fine"
        }
        let router = Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/fine", axum::routing::get(fine));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, ServeOptions::default(), async {
            let _ = stopped.await;
        }));
        let ask = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let answer = ask("/boom").await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(
            answer.contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert!(answer.contains(r#""code":"internal_error""#), "{answer}");
        assert!(ask("/fine").await.ends_with("fine"));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
