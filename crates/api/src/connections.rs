//! The HTTP/1.1 server loop: accepts connections under a cap and serves each with hyper, with
//! a header read timeout, so slow or idle clients cannot hold the service's connections.
//!
//! hyper starts the header read timer as soon as a connection waits for a request (when it is
//! opened, and again after each response), so the same timeout closes a client that sends its
//! headers slowly (a byte a second) and a connection that sits idle, fresh or kept alive.
//! A connection beyond the cap is answered `503 too_many_connections` and closed at once, so a
//! client learns why instead of waiting in the kernel's accept queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Problem;

/// How long a refused connection is given to take its 503 before it is closed.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Limits on the connections a server holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a client may take to send a request's headers, counted from when the connection
    /// starts waiting for a request (so also the longest a connection may sit idle).
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let closing = CancellationToken::new();
    let open = metrics::gauge!("planledger_http_connections_open");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("planledger_http_connections_rejected_total").increment(1);
            tokio::spawn(refuse(stream, max));
            continue;
        };
        let _ = stream.set_nodelay(true);
        open.increment(1.0);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let closing = closing.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            match result {
                Err(error) if error.is_timeout() => {
                    metrics::counter!("planledger_http_header_timeouts_total").increment(1);
                    tracing::debug!(
                        "closed a connection that sent no complete request headers in time"
                    );
                }
                Err(error) => tracing::debug!(%error, "connection ended with an error"),
                Ok(()) => {}
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection holds a permit until it is closed.
    let _ = permits
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
}

/// Answers a connection over the cap with a 503 problem and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        format!(
            "the server already holds its most connections ({max}); retry shortly, and reuse a connection (keep-alive) instead of opening many"
        ),
    );
    let body = String::from_utf8(problem.body()).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes, so closing does not reset the connection
        // before the client has read the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// After a failed `accept`: a connection-level error is the peer's and is skipped; any other
/// (out of file descriptors) is logged and waited out, as hyper's own server did.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    metrics::counter!("planledger_http_accept_errors_total").increment(1);
    tracing::error!(%error, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
