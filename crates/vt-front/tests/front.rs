//! The workspace origin through real sockets: a real `serve` listener (plain and TLS), real
//! HTTP and WebSocket backends on loopback, real HTTP and WebSocket clients.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vt_front::auth::{BoxFuture, Credentials, SESSION_COOKIE};
use vt_front::{Down, Front, FrontTable, RouteState, UpstreamLimits, WorkspaceRoute};
use vt_ids::Name;

const PASSWORD: &str = "correct horse";

/// The credentials `vt server` checks against the console token, as a fixed password.
struct Fixed;
impl Credentials for Fixed {
    fn verify<'a>(&'a self, user: &'a str, password: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move { Ok(user == "vt" && password == PASSWORD) })
    }
    fn active(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async { Ok(true) })
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn auth() -> String {
    basic("vt", PASSWORD)
}

/// A backend that answers every request with what it received, and echoes WebSockets at `/ws`.
async fn backend(listener: TcpListener) {
    async fn echo(req: Request) -> impl IntoResponse {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let headers: serde_json::Map<String, serde_json::Value> =
            parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").into())).collect();
        axum::Json(serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "headers": headers,
            "body_len": body.len(),
        }))
    }
    async fn ws(up: WebSocketUpgrade) -> impl IntoResponse {
        up.on_upgrade(|mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, WsMessage::Text(_) | WsMessage::Binary(_)) && socket.send(msg).await.is_err() {
                    break;
                }
            }
        })
    }
    async fn hang() -> &'static str {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "late"
    }
    async fn private() -> (axum::http::StatusCode, &'static str) {
        (axum::http::StatusCode::UNAUTHORIZED, "the workspace's own app says no")
    }
    let app =
        Router::new().route("/ws", get(ws)).route("/hang", get(hang)).route("/private", get(private)).fallback(echo);
    axum::serve(listener, app).await.unwrap();
}

async fn spawn_backend() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(backend(l));
    addr
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn serving(n: &str, addr: SocketAddr, ports: &[u16]) -> WorkspaceRoute {
    WorkspaceRoute {
        name: name(n),
        state: RouteState::Serving { address: addr.ip() },
        ide_port: addr.port(),
        ports: ports.iter().copied().collect::<BTreeSet<_>>(),
    }
}

struct Running {
    front: Arc<Front>,
    url: String,
    addr: SocketAddr,
}

async fn start_front(limits: UpstreamLimits, tls: Option<vt_front::Tls>) -> Running {
    let front = Front::new(Box::new(Fixed), limits).unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let connection_limits =
        vt_front::ConnectionLimits { header_read_timeout: Duration::from_secs(2), ..Default::default() };
    tokio::spawn(vt_front::serve(
        listener,
        tls,
        front.router(),
        connection_limits,
        Duration::from_secs(1),
        std::future::pending(),
    ));
    Running { front, url: format!("{scheme}://{addr}"), addr }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    resp.json().await.unwrap()
}

#[tokio::test]
async fn routes_with_the_prefix_stripped_and_credentials_removed() {
    let b = spawn_backend().await;
    let f = start_front(UpstreamLimits::default(), None).await;
    f.front.apply(FrontTable::new([serving("dev", b, &[])]).unwrap());
    let c = client();
    let resp = c
        .post(format!("{}/workspace/dev/a/b%20c?x=1&y=2", f.url))
        .header("authorization", auth())
        .header("cookie", "app=1")
        .header("x-forwarded-for", "203.0.113.9")
        .body(vec![7u8; 3 << 20])
        .send()
        .await
        .unwrap();
    let set_cookie = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap();
    let seen = json(resp).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/a/b%20c?x=1&y=2");
    assert_eq!(seen["body_len"], 3 << 20, "the body is streamed whole");
    let h = &seen["headers"];
    assert_eq!(h["host"], f.addr.to_string(), "Host is kept");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "the client, not what it claimed");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], f.addr.to_string());
    assert_eq!(h["x-forwarded-prefix"], "/workspace/dev");
    assert!(h.get("authorization").is_none(), "the console password never reaches a workspace: {h}");
    assert_eq!(h["cookie"], "app=1");
    assert!(set_cookie.starts_with(&format!("{SESSION_COOKIE}=")), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "not under plain HTTP: {set_cookie}");

    // The cookie alone lets in, and does not reach the workspace either.
    let session = set_cookie.split(';').next().unwrap().to_owned();
    let resp =
        c.get(format!("{}/workspace/dev/", f.url)).header("cookie", format!("{session}; app=2")).send().await.unwrap();
    assert!(resp.headers().get("set-cookie").is_none(), "a session is not renewed on every request");
    let seen = json(resp).await;
    assert_eq!(seen["uri"], "/");
    assert_eq!(seen["headers"]["cookie"], "app=2");

    // The bare name and a bare port redirect to the trailing slash, keeping the query.
    let resp =
        c.get(format!("{}/workspace/dev?folder=/home", f.url)).header("authorization", auth()).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/workspace/dev/?folder=/home");
    let resp =
        c.get(format!("{}/workspace/dev/port/3000", f.url)).header("authorization", auth()).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/workspace/dev/port/3000/");
    assert!(f.front.accesses().take().iter().any(|(n, _)| n.as_str() == "dev"), "the access is noted");
}

#[tokio::test]
async fn lets_in_the_console_user_only() {
    let b = spawn_backend().await;
    let f = start_front(UpstreamLimits::default(), None).await;
    f.front.apply(FrontTable::new([serving("dev", b, &[])]).unwrap());
    let c = client();
    let url = format!("{}/workspace/dev/", f.url);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="));
    for authorization in
        [basic("vt", "wrong"), basic("admin", PASSWORD), format!("Bearer {PASSWORD}"), "Basic %%%".into()]
    {
        let resp = c.get(&url).header("authorization", &authorization).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{authorization}");
    }
    // A cookie of another origin (its own key), even under this origin's cookie name.
    let api_origin = vt_front::auth::Sessions::new().unwrap();
    let foreign = format!("{SESSION_COOKIE}={}", api_origin.issue());
    assert_eq!(c.get(&url).header("cookie", &foreign).send().await.unwrap().status(), 401);
    assert_eq!(c.get(&url).header("cookie", format!("{SESSION_COOKIE}=1.AAAA")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(&url).header("authorization", auth()).send().await.unwrap().status(), 200);
    // Nothing about workspaces leaks before the login: an unknown one is 401 too.
    assert_eq!(c.get(format!("{}/workspace/nope/", f.url)).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn failed_logins_are_limited() {
    let b = spawn_backend().await;
    let f = start_front(UpstreamLimits::default(), None).await;
    f.front.apply(FrontTable::new([serving("dev", b, &[])]).unwrap());
    let c = client();
    // A workspace's own 401s (the browser still sends the console credentials) are no failed logins.
    let private = format!("{}/workspace/dev/private", f.url);
    for _ in 0..vt_front::auth::MAX_FAILURES + 2 {
        assert_eq!(c.get(&private).header("authorization", auth()).send().await.unwrap().status(), 401);
    }
    let url = format!("{}/workspace/dev/", f.url);
    assert_eq!(c.get(&url).header("authorization", auth()).send().await.unwrap().status(), 200);
    for _ in 0..vt_front::auth::MAX_FAILURES {
        assert_eq!(c.get(&url).header("authorization", basic("vt", "guess")).send().await.unwrap().status(), 401);
    }
    let resp = c.get(&url).header("authorization", auth()).send().await.unwrap();
    assert_eq!(resp.status(), 429, "even the right password waits");
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn answers_unknown_stopped_and_unlistened_with_pages() {
    let b = spawn_backend().await;
    // A port nothing listens on (yet).
    let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let f = start_front(UpstreamLimits::default(), None).await;
    let stopped = WorkspaceRoute {
        name: name("off"),
        state: RouteState::Down(Down::Stopped),
        ide_port: 8080,
        ports: BTreeSet::new(),
    };
    f.front.apply(FrontTable::new([serving("dev", b, &[port]), stopped]).unwrap());
    let c = client();
    let get = |path: &str| c.get(format!("{}{path}", f.url)).header("authorization", auth()).send();

    let resp = get("/workspace/nope/").await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("vt workspace create nope"));
    let resp = get("/workspace/off/x").await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("vt workspace start off"));
    let resp = get(&format!("/workspace/dev/port/{port}/")).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains(&format!("Nothing is listening on port {port}")));
    let resp = get("/workspace/dev/port/1234/").await.unwrap();
    assert_eq!(resp.status(), 404, "not registered");
    assert!(resp.text().await.unwrap().contains("vt workspace port add dev 1234"));

    // Once something listens, the same path serves it.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await.unwrap();
    tokio::spawn(backend(l));
    let seen = json(get(&format!("/workspace/dev/port/{port}/api?q=1")).await.unwrap()).await;
    assert_eq!(seen["uri"], "/api?q=1");
    assert_eq!(seen["headers"]["x-forwarded-prefix"], format!("/workspace/dev/port/{port}"));

    // Raw, since an HTTP client would resolve the dots itself.
    let a = auth();
    for path in ["/workspace/dev/../x", "/workspace/dev/%2e%2e/x", "/workspace/dev%2fx/", "/workspace/dev/a%5cb"] {
        let answer =
            raw(f.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nConnection: close\r\n\r\n"))
                .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(get(&format!("/workspace/dev/{}", "a".repeat(9000))).await.unwrap().status(), 414);
    assert_eq!(get("/").await.unwrap().status(), 404);
}

#[tokio::test]
async fn passes_websockets_through_and_checks_their_origin() {
    let b = spawn_backend().await;
    let f = start_front(UpstreamLimits::default(), None).await;
    f.front.apply(FrontTable::new([serving("dev", b, &[])]).unwrap());
    let ws_url = format!("ws://{}/workspace/dev/ws", f.addr);

    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", auth().parse().unwrap());
    req.headers_mut().insert("origin", format!("http://{}", f.addr).parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..100 {
        let text = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone())).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    let big = vec![42u8; 1 << 20];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().as_ref(), big.as_slice());
    ws.close(None).await.unwrap();
    assert_eq!(f.front.metrics().upgrades(), 1);

    // A page of another origin may not open one.
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", auth().parse().unwrap());
    req.headers_mut().insert("origin", "http://127.0.0.1:7411".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a cross-origin upgrade was not refused: {:?}", other.map(|(_, r)| r.status())),
    }
    // And without credentials, none at all.
    match tokio_tungstenite::connect_async(ws_url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("an anonymous upgrade was not refused: {:?}", other.map(|(_, r)| r.status())),
    }
    let text = f.front.metrics().text();
    assert!(text.contains("vt_front_upgrades_total{origin=\"workspace\"} 1"), "{text}");
}

#[tokio::test]
async fn a_table_swap_under_load_drops_nothing() {
    let (b1, b2) = (spawn_backend().await, spawn_backend().await);
    let f = start_front(UpstreamLimits::default(), None).await;
    let table = |b: SocketAddr| FrontTable::new([serving("dev", b, &[]), serving("other", b, &[])]).unwrap();
    f.front.apply(table(b1));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = vec![];
    for _ in 0..8 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), format!("{}/workspace/dev/x", f.url));
        workers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).header("authorization", auth()).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..200 {
        f.front.apply(table(if i % 2 == 0 { b2 } else { b1 }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100, "{}", ok.load(Ordering::Relaxed));
}

/// Raw bytes on the front's socket: what a hostile client sends.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn hostile_clients_and_hung_workspaces_stay_contained() {
    let b = spawn_backend().await;
    let limits = UpstreamLimits { connect_timeout: Duration::from_secs(2), response_timeout: Duration::from_secs(1) };
    let f = start_front(limits, None).await;
    f.front.apply(FrontTable::new([serving("dev", b, &[]), serving("ok", b, &[])]).unwrap());
    let a = auth();

    // Request smuggling: both lengths. hyper frames the request by `Transfer-Encoding` and
    // closes the connection after its answer (RFC 9112 §6.3), so what was smuggled after the
    // chunked body is never read as a request.
    let answer = raw(
        f.addr,
        &format!(
            "POST /workspace/dev/ HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Length: 4\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /workspace/ok/ HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(!answer.contains("\"/workspace/ok/\"") && !answer.contains("\"uri\":\"/workspace"), "{answer}");
    // Two different Content-Lengths.
    let answer = raw(
        f.addr,
        &format!("POST /workspace/dev/ HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Absurd headers: 1 MiB of them.
    let answer =
        raw(f.addr, &format!("GET /workspace/dev/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)))
            .await;
    assert!(answer.starts_with("HTTP/1.1 431") || answer.is_empty(), "{}", &answer[..answer.len().min(100)]);

    // A slowloris client is cut off at the header timeout (2 s here).
    let began = std::time::Instant::now();
    let mut slow = TcpStream::connect(f.addr).await.unwrap();
    slow.write_all(b"GET /workspace/dev/ HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(began.elapsed() < Duration::from_secs(6), "{:?}", began.elapsed());

    // A workspace that never answers gets a 504 in bounded time, and the others keep answering meanwhile.
    let c = client();
    let hung = {
        let (c, url, a) = (c.clone(), format!("{}/workspace/dev/hang", f.url), a.clone());
        tokio::spawn(async move { c.get(url).header("authorization", a).send().await.unwrap() })
    };
    let seen =
        json(c.get(format!("{}/workspace/ok/fine", f.url)).header("authorization", &a).send().await.unwrap()).await;
    assert_eq!(seen["uri"], "/fine");
    let resp = hung.await.unwrap();
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn terminates_tls_with_secure_cookies() {
    let b = spawn_backend().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let dir = std::env::temp_dir().join(format!("vt-front-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = vt_front::Tls::from_pem_files(&cert_path, &key_path).unwrap();
    // A key that is not a key is refused with the file's name.
    let e = vt_front::Tls::from_pem_files(&cert_path, &cert_path).unwrap_err().to_string();
    assert!(e.contains("cert.pem"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    let f = start_front(UpstreamLimits::default(), Some(tls)).await;
    f.front.apply(FrontTable::new([serving("dev", b, &[])]).unwrap());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let stream = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/workspace/dev/secure")
        .header("host", "localhost")
        .header("authorization", auth())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["uri"], "/secure");
}
