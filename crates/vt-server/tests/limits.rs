//! The API listener's patience and per-client cap, against a real `vt server` on loopback:
//! stalled connections are closed by the header read timeout while normal requests stay
//! fast, a stalled body is a 408, and one client cannot hold more than its share.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vt_server::{ConnectionLimits, Server, ServerConfig};

struct Running {
    addr: SocketAddr,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(limits: ConnectionLimits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.sqlite = vt_store::SqliteOptions { full_sync: false };
    config.limits = limits;
    let server = Server::start(&config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let token = std::fs::read_to_string(server.data.admin_token()).unwrap().trim().to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Running { addr, token, stop: Some(tx), _dir: dir }
}

/// Read until the server closes the connection (EOF or reset); `Err` past `deadline`.
async fn closed_by_server(conn: &mut TcpStream, deadline: Instant) -> Result<(), ()> {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
            Err(_) => return Err(()),
        }
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_connections_are_closed_and_requests_stay_fast() {
    let timeout = Duration::from_secs(1);
    let s = start(ConnectionLimits {
        header_read_timeout: timeout,
        body_read_timeout: timeout,
        max_connections_per_client: 2000,
    })
    .await;
    // 1000 clients that stall: half send a partial request line and headers, half nothing.
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut conn = TcpStream::connect(s.addr).await.unwrap();
        if i % 2 == 0 {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
        }
        stalled.push(conn);
    }
    let opening = opened.elapsed();
    // Meanwhile, normal requests: each on a fresh connection, timed.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut latencies = Vec::new();
    let requests_until = Instant::now() + timeout;
    while Instant::now() < requests_until || latencies.len() < 20 {
        let t = Instant::now();
        let r = http.get(format!("http://{}/v1/orgs", s.addr)).bearer_auth(&s.token).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        latencies.push(t.elapsed());
    }
    latencies.sort();
    // Every stalled connection is closed by the server, about the timeout after it opened.
    let deadline = opened + timeout + Duration::from_secs(15);
    let mut still_open = 0;
    for conn in &mut stalled {
        if closed_by_server(conn, deadline).await.is_err() {
            still_open += 1;
        }
    }
    let all_closed = opened.elapsed();
    eprintln!(
        "1000 stalled connections (opened in {opening:?}) closed {all_closed:?} after the first opened \
         (header read timeout {timeout:?}); {} requests meanwhile: p50 {:?}, p95 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 95),
        latencies.last().unwrap()
    );
    assert_eq!(still_open, 0, "stalled connections left open past {deadline:?}");
    // Loose: normal requests were served while a thousand connections stalled.
    assert!(*latencies.last().unwrap() < Duration::from_secs(2), "{latencies:?}");
    // And the server still serves afterwards.
    let r = http.get(format!("http://{}/healthz", s.addr)).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408() {
    let s = start(ConnectionLimits { body_read_timeout: Duration::from_millis(500), ..Default::default() }).await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/orgs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"name\":",
        s.token
    );
    let t = Instant::now();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");
    eprintln!("stalled body answered after {:?} (body read timeout 500ms)", t.elapsed());
    assert!(t.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_of_connections() {
    let s = start(ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections_per_client: 8,
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The ninth is closed at once (well before the header read timeout).
    let mut ninth = TcpStream::connect(s.addr).await.unwrap();
    let t = Instant::now();
    assert!(closed_by_server(&mut ninth, Instant::now() + Duration::from_secs(5)).await.is_ok());
    assert!(t.elapsed() < Duration::from_secs(5));
    // The held ones are untouched: one of them still gets an answer.
    held[0].write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    held[0].read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Closing connections frees their slots.
    held.truncate(4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = reqwest::get(format!("http://{}/healthz", s.addr)).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}
