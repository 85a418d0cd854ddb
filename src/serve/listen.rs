//! The daemon's HTTP server loop: the router on hyper's HTTP/1 connections, with the limits
//! `axum::serve` leaves open (issue 24): a request's head must arrive within `HEADER_TIMEOUT` of
//! the connection being ready for it — a half-sent request, or a connection left idle between
//! requests, is closed — and a body must arrive within `BODY_TIMEOUT` (`http::routes`). Shutdown:
//! no new connections; each open one finishes its request in flight (the caller bounds the wait).

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client has to send a request's head (and how long a connection may sit idle).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's read and write buffer (hyper's default is about 400 KB).
const MAX_BUF: usize = 64 * 1024;
/// How long a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves; then waits for the open connections
/// to finish their request in flight.
pub async fn serve(listener: TcpListener, router: axum::Router, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: the listener itself is fine.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                // What a connection buffers (its request head; what it has not written yet): a
                // stalled event-stream client holds at most this and one event, not 400 KB.
                .max_buf_size(MAX_BUF);
            let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {} // reap the finished ones
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}
