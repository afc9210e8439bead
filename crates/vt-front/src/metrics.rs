//! Counters of an origin: requests by status class, upgrades, bytes each way. Both origins
//! count through [`count`] (an axum middleware); the workspace origin adds the bytes of
//! upgraded connections. `/metrics` prints them ([`OriginMetrics::text`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// One origin's counters.
#[derive(Debug)]
pub struct OriginMetrics {
    origin: &'static str,
    requests: [AtomicU64; 5],
    upgrades: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl OriginMetrics {
    /// Counters of the origin named `origin` (`api`, `workspace`).
    pub fn new(origin: &'static str) -> Arc<OriginMetrics> {
        Arc::new(OriginMetrics {
            origin,
            requests: Default::default(),
            upgrades: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
    }

    /// A response of this status was sent.
    pub fn answered(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Relaxed);
    }

    pub fn upgraded(&self) {
        self.upgrades.fetch_add(1, Relaxed);
    }

    /// Bytes moved by an upgraded connection (client to upstream, and back).
    pub fn upgraded_bytes(&self, to_upstream: u64, to_client: u64) {
        self.bytes_in.fetch_add(to_upstream, Relaxed);
        self.bytes_out.fetch_add(to_client, Relaxed);
    }

    /// Requests answered with a status of `class` (1 to 5).
    pub fn requests(&self, class: usize) -> u64 {
        self.requests[class.clamp(1, 5) - 1].load(Relaxed)
    }

    pub fn upgrades(&self) -> u64 {
        self.upgrades.load(Relaxed)
    }

    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed))
    }

    /// Prometheus text of these counters.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let o = self.origin;
        let mut s = String::new();
        let _ = writeln!(s, "# TYPE vt_front_requests_total counter");
        for class in 1..=5 {
            let _ =
                writeln!(s, "vt_front_requests_total{{origin=\"{o}\",class=\"{class}xx\"}} {}", self.requests(class));
        }
        let _ = writeln!(s, "# TYPE vt_front_upgrades_total counter");
        let _ = writeln!(s, "vt_front_upgrades_total{{origin=\"{o}\"}} {}", self.upgrades());
        let (i, out) = self.bytes();
        let _ = writeln!(s, "# TYPE vt_front_bytes_total counter");
        let _ = writeln!(s, "vt_front_bytes_total{{origin=\"{o}\",direction=\"in\"}} {i}");
        let _ = writeln!(s, "vt_front_bytes_total{{origin=\"{o}\",direction=\"out\"}} {out}");
        s
    }
}

/// Middleware: count each request's status and the bytes of its body and its response's.
pub async fn count(State(m): State<Arc<OriginMetrics>>, req: Request, next: Next) -> Response {
    // A request without a body (most are) has no bytes to count: it is not wrapped.
    let req = if http_body::Body::is_end_stream(req.body()) {
        req
    } else {
        req.map(|b| Body::new(Counted { inner: b, metrics: m.clone(), inbound: true }))
    };
    let resp = next.run(req).await;
    m.answered(resp.status().as_u16());
    if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
        m.upgraded();
    }
    resp.map(|b| Body::new(Counted { inner: b, metrics: m, inbound: false }))
}

/// A body that adds its bytes to an origin's counters as they pass.
struct Counted {
    inner: Body,
    metrics: Arc<OriginMetrics>,
    inbound: bool,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                let n = data.len() as u64;
                let counter = if self.inbound { &self.metrics.bytes_in } else { &self.metrics.bytes_out };
                counter.fetch_add(n, Relaxed);
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
