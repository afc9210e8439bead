//! The listener of an origin: HTTP/1.1, plain or TLS, with bounded patience and a cap per
//! client. Both origins (the API's and the workspaces') are served by it.
//!
//! `axum::serve` waits for a client forever: a connection that never finishes its
//! headers, or a body that stops arriving, holds a socket (and a task) until the
//! process runs out of file descriptors. Here each connection is served by hyper
//! with [`ConnectionLimits`]:
//!
//! - **header read timeout**: a request's headers must arrive within it, and an idle
//!   keep-alive connection is closed after it (hyper's `header_read_timeout`, which
//!   starts when the server waits for a request);
//! - **body read timeout**: a request body may go this long without a byte; then
//!   reading it fails as `io::ErrorKind::TimedOut` (the API answers 408);
//! - **connections per client**: at most this many open connections from one IP
//!   address; one more is closed as soon as it is accepted;
//! - **TLS handshake**: with a certificate ([`Tls`]), the handshake must finish within the
//!   header read timeout too.
//!
//! Each request carries its client's [`Peer`] (address, and whether it came over TLS) as
//! an extension.
//!
//! A shutdown stops accepting, lets requests in flight finish for up to the drain
//! timeout (`vt server --drain-timeout`, [`DEFAULT_DRAIN`]), then closes what is left.
//! Nothing that waits for news holds it up: the server closes the control plane's
//! long polls and follow streams when the shutdown begins.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::tls::Tls;

/// Who sent a request: the client's address, and whether the connection is TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    pub tls: bool,
}

/// How long requests in flight may take to finish once a shutdown begins, by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// How patient the API listener is, and with how many connections per client (`vt server` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this; idle keep-alive connections close after it.
    pub header_read_timeout: Duration,
    /// A request body may go this long without a byte.
    pub body_read_timeout: Duration,
    /// Open connections from one IP address.
    pub max_connections_per_client: usize,
}

impl Default for ConnectionLimits {
    /// 30 s for headers, 30 s without a body byte, 128 connections per client.
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections_per_client: 128,
        }
    }
}

/// Serve `app` on `listener` (through `tls`, when given) with `limits` until `shutdown`
/// resolves, then let requests in flight finish for up to `drain` (see the module docs).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    app: Router,
    limits: ConnectionLimits,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let clients = Clients::default();
    // Each connection's task holds a `drained` sender: the drain is over when all are gone. A
    // connection sees `stopping` and finishes its request in flight, then closes.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let (drained, mut all_drained) = tokio::sync::mpsc::channel::<()>(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // nothing to serve; back off a little when it is the process's limits.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = clients.take(peer.ip(), limits.max_connections_per_client) else {
            tracing::debug!(client = %peer.ip(), "connection refused: too many open connections from this client");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let http = http.clone();
        let tls = tls.clone();
        let (stop, drained) = (stop.clone(), drained.clone());
        tokio::spawn(async move {
            match tls {
                None => {
                    let peer = Peer { addr: peer, tls: false };
                    connection(stream, peer, app, &http, limits.body_read_timeout, stop).await;
                }
                Some(tls) => {
                    match tokio::time::timeout(limits.header_read_timeout, tls.acceptor().accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let peer = Peer { addr: peer, tls: true };
                            connection(stream, peer, app, &http, limits.body_read_timeout, stop).await;
                        }
                        Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
            drop(drained);
        });
    }
    drop(listener);
    stopping.send_replace(true);
    drop(drained);
    if tokio::time::timeout(drain, all_drained.recv()).await.is_err() {
        tracing::warn!(drain_secs = drain.as_secs(), "requests still in flight after the drain timeout; closing them");
    }
    Ok(())
}

/// Serve one connection until it ends, or until `stop` is set and its request in flight finished.
async fn connection<S>(
    stream: S,
    peer: Peer,
    app: Router,
    http: &hyper::server::conn::http1::Builder,
    body_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(|body| StallTimeout::new(body, body_timeout));
        req.extensions_mut().insert(peer);
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    // With upgrades: `vt exec`'s WebSocket (`GET /v1/exec/{grant}`) and a workspace's take the
    // connection over.
    let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(client = %peer.addr, error = %e, "connection ended with an error");
    }
}

/// Open connections per client address.
#[derive(Clone, Default)]
struct Clients(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Clients {
    /// A slot for one more connection from `ip`, unless it has `max` open.
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { clients: self.clone(), ip })
    }
}

/// One open connection of a client; dropping it frees the slot.
struct Slot {
    clients: Clients,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A request body that fails with `io::ErrorKind::TimedOut` when no frame arrives for
/// `timeout` while it is being read. The clock starts at the first read, so a handler that
/// never reads the body is not cut off.
struct StallTimeout<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> StallTimeout<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        StallTimeout { inner, timeout, sleep: None }
    }
}

impl<B> Body for StallTimeout<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no byte of the request body for {} ms", timeout.as_millis()),
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
