//! Side-by-side loopback benchmark of the workspace origin (vt-front) and Caddy 2.6.
//!
//! Usage: `vt-front-bench [--rounds R] [--secs S] [--concurrency 16,64] [--ws-conns N]
//! [--latency-requests N] [--body-bytes B] [--slices N] [--only TEXT] [--quick]` (needs
//! `caddy` on PATH: `apt-get install -y caddy`). `--only ws` measures only the metrics whose
//! label contains `ws`.
//!
//! Two backends run in this process on a runtime of their own (an "IDE" and a "port"
//! backend, each answering `GET /file` with a fixed body and echoing WebSockets at `/ws`).
//! In front of them, each as a child process on its own loopback port:
//!
//! - **vt**: [`vt_front::Front`] served by [`vt_front::serve`] (default connection limits),
//!   its table routing workspace `dev` to the IDE backend and registered port N (the port
//!   backend's port) to the port backend; credentials: a fixed console password.
//! - **caddy**: `caddy run` with a generated Caddyfile for the same two routes with the same
//!   semantics: `handle_path` strips the prefix, `basicauth` (bcrypt from `caddy
//!   hash-password`; the Caddyfile form caches verified passwords, as vt remembers a
//!   verified `Authorization` for a few seconds), the `Authorization` header removed and
//!   `X-Forwarded-Prefix` added upstream (as vt does), WebSockets passed through, the default
//!   `X-Forwarded-For/-Proto/-Host`. Its upstream keep-alive pool is widened to 1024 idle
//!   connections per host (vt's pool is unbounded; Caddy's default of 32 would make it open
//!   new upstream connections at concurrency 64). Admin endpoint and logs off.
//!
//! Before measuring, a request through each proxy checks what the backend receives (path
//! stripped, no `Authorization`, the `X-Forwarded-*` headers), so both really do the same.
//!
//! One client (hyper HTTP/1.1 connections and tokio-tungstenite, in this process) measures
//! both. Each rate takes `--secs` per proxy per round, in `--slices` slices taken in turn
//! (vt, caddy, caddy, vt, ...; which goes first alternates by round), connections opened
//! before each slice's clock starts, so that both see the same swings of the machine's load:
//!
//! - **keep-alive req/s**: N workers, each one connection, `GET` after `GET`;
//! - **new-conn req/s**: N workers, each request on a new connection (`Connection: close`);
//! - **added p50/p99**: one connection to each of the backend, vt and Caddy, one request at a
//!   time, taking turns (so all three see the same moments of load); latency through the
//!   proxy minus latency straight to the backend;
//! - **ws echo msg/s**: N WebSockets, each sending a 32-byte message and waiting for its echo.
//!
//! Auth variants: **basic** sends the same `Authorization: Basic` header on every request to
//! both; **session** reaches each proxy by its cheapest mechanism for a returning browser:
//! vt's session cookie (from a first basic-auth response), and for Caddy (which has no
//! session) the same basic header as before.
//!
//! Internal mode: `vt-front-bench --serve-front <listen-port> <ide-port> <port-port>` runs
//! the front on loopback (used as the child).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use vt_front::auth::{BoxFuture, Credentials};
use vt_front::{Front, FrontTable, RouteState, WorkspaceRoute};

const USER: &str = "vt";
const PASSWORD: &str = "bench-console-password";
const WORKSPACE: &str = "dev";
const WS_MESSAGE: [u8; 32] = [0x42; 32];

const USAGE: &str = "usage: vt-front-bench [--rounds R] [--secs S] [--concurrency 16,64] [--ws-conns N] \
                     [--latency-requests N] [--body-bytes B] [--slices N] [--only TEXT] [--quick]";

struct Params {
    rounds: usize,
    /// How long each rate (req/s, msg/s) is measured.
    secs: Duration,
    concurrency: Vec<usize>,
    ws_conns: usize,
    latency_requests: usize,
    body_bytes: usize,
    /// Each rate is measured in this many slices, vt's and Caddy's in turn.
    slices: usize,
    /// Only the metrics whose label contains this.
    only: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rounds: 5,
            secs: Duration::from_secs(1),
            concurrency: vec![16, 64],
            ws_conns: 16,
            latency_requests: 2000,
            body_bytes: 1024,
            slices: 4,
            only: None,
        }
    }
}

fn parse_args(args: &[String]) -> Result<Params, String> {
    let mut p = Params::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            p.rounds = 1;
            p.secs = Duration::from_millis(300);
            p.latency_requests = 500;
            p.slices = 2;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag}: `{v}` is not a number"));
        match flag.as_str() {
            "--rounds" => p.rounds = number(value)?.max(1),
            "--secs" => {
                let s = value.parse::<f64>().ok().filter(|s| *s > 0.0 && *s < 3600.0);
                p.secs = Duration::from_secs_f64(s.ok_or_else(|| format!("--secs: `{value}` is not seconds"))?);
            }
            "--concurrency" => {
                p.concurrency =
                    value.split(',').map(|v| number(v.trim()).map(|n| n.max(1))).collect::<Result<_, _>>()?
            }
            "--ws-conns" => p.ws_conns = number(value)?.max(1),
            "--latency-requests" => p.latency_requests = number(value)?.max(10),
            "--body-bytes" => p.body_bytes = number(value)?,
            "--slices" => p.slices = number(value)?.clamp(1, 100),
            "--only" => p.only = Some(value.clone()),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(p)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--serve-front" {
        // The front's child: as many workers as CPUs (tokio's default; Go's GOMAXPROCS for Caddy).
        let ports: Vec<u16> = args[2..].iter().filter_map(|a| a.parse().ok()).collect();
        let [listen, ide, port] = ports[..] else {
            eprintln!("--serve-front needs three ports");
            std::process::exit(2);
        };
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
        if let Err(e) = rt.block_on(serve_front(listen, ide, port)) {
            eprintln!("front failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let params = match parse_args(&args[1..]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    // The backends on a runtime of their own, so the client's workers never queue behind them.
    let backends =
        tokio::runtime::Builder::new_multi_thread().thread_name("backend").enable_all().build().expect("tokio runtime");
    let body = Bytes::from(vec![b'x'; params.body_bytes]);
    let started = backends.block_on(async {
        let ide = spawn_backend("ide", body.clone()).await?;
        let port = spawn_backend("port", body).await?;
        Ok::<_, BoxError>((ide, port))
    });
    let result = match started {
        Ok((ide, port)) => rt.block_on(run(params, ide, port)),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// The console password, as `vt server` checks it against the console token.
struct Fixed;

impl Credentials for Fixed {
    fn verify<'a>(&'a self, user: &'a str, password: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move { Ok(user == USER && password == PASSWORD) })
    }

    fn active(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async { Ok(true) })
    }
}

async fn serve_front(listen: u16, ide: u16, port: u16) -> Res<()> {
    let front = Front::new(Box::new(Fixed), vt_front::UpstreamLimits::default())?;
    front.apply(FrontTable::new([WorkspaceRoute {
        name: vt_ids::Name::parse(WORKSPACE)?,
        state: RouteState::Serving { address: Ipv4Addr::LOCALHOST.into() },
        ide_port: ide,
        ports: [port].into(),
    }])?);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, listen)).await?;
    vt_front::serve(
        listener,
        None,
        front.router(),
        vt_front::ConnectionLimits::default(),
        Duration::from_secs(1),
        std::future::pending(),
    )
    .await?;
    Ok(())
}

/// A backend: `GET /file` answers `body`, `/ws` echoes WebSocket messages, `/check` tells what
/// it received (its name, the path, the headers a proxy sets or must remove).
async fn spawn_backend(name: &'static str, body: Bytes) -> Res<SocketAddr> {
    async fn ws(up: WebSocketUpgrade) -> Response {
        up.on_upgrade(|mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, WsMessage::Text(_) | WsMessage::Binary(_)) && socket.send(msg).await.is_err() {
                    break;
                }
            }
        })
    }
    let check = move |req: Request| async move {
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        format!(
            "backend={name} path={} authorization={} x-forwarded-for={} x-forwarded-proto={} x-forwarded-host={} \
             x-forwarded-prefix={}",
            req.uri(),
            h("authorization"),
            h("x-forwarded-for"),
            h("x-forwarded-proto"),
            h("x-forwarded-host"),
            h("x-forwarded-prefix"),
        )
    };
    let app = Router::new()
        .route("/file", get(move || std::future::ready(body.clone().into_response())))
        .route("/ws", get(ws))
        .route("/check", get(check));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("backend {name} failed: {e}");
        }
    });
    Ok(addr)
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn caddyfile(port: u16, ide: SocketAddr, registered: SocketAddr, hash: &str) -> String {
    let proxy = |to: SocketAddr, prefix: &str| {
        format!(
            "reverse_proxy {to} {{\n\
             \x20           header_up -Authorization\n\
             \x20           header_up X-Forwarded-Prefix {prefix}\n\
             \x20           transport http {{\n\
             \x20               keepalive_idle_conns_per_host 1024\n\
             \x20           }}\n\
             \x20       }}"
        )
    };
    let n = registered.port();
    format!(
        "{{\n\
         \x20   admin off\n\
         \x20   auto_https off\n\
         \x20   log {{\n\
         \x20       output discard\n\
         \x20   }}\n\
         }}\n\
         http://:{port} {{\n\
         \x20   bind 127.0.0.1\n\
         \x20   basicauth {{\n\
         \x20       {USER} {hash}\n\
         \x20   }}\n\
         \x20   handle_path /workspace/{WORKSPACE}/port/{n}/* {{\n\
         \x20       {}\n\
         \x20   }}\n\
         \x20   handle_path /workspace/{WORKSPACE}/* {{\n\
         \x20       {}\n\
         \x20   }}\n\
         }}\n",
        proxy(registered, &format!("/workspace/{WORKSPACE}/port/{n}")),
        proxy(ide, &format!("/workspace/{WORKSPACE}")),
    )
}

async fn caddy_output(args: &[&str]) -> Res<String> {
    let out = Command::new("caddy")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run caddy (apt-get install -y caddy): {e}"))?;
    if !out.status.success() {
        return Err(format!("caddy {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn wait_ready(port: u16, child: &mut Child, what: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited early: {status}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} not listening on {port}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A `GET` the client sends again and again.
struct Get {
    addr: SocketAddr,
    path: String,
    host: HeaderValue,
    /// `Authorization` or `Cookie`, whichever the variant sends.
    credential: Option<(header::HeaderName, HeaderValue)>,
    /// The body length a good answer has.
    expect: usize,
}

impl Get {
    fn new(
        addr: SocketAddr,
        path: String,
        credential: Option<(header::HeaderName, HeaderValue)>,
        expect: usize,
    ) -> Get {
        let host = HeaderValue::from_str(&addr.to_string()).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Get { addr, path, host, credential, expect }
    }

    fn request(&self, close: bool) -> hyper::Request<Empty<Bytes>> {
        let mut req = hyper::Request::new(Empty::new());
        *req.uri_mut() = self.path.parse().unwrap_or_default();
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        if let Some((name, value)) = &self.credential {
            h.insert(name.clone(), value.clone());
        }
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        req
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(
    addr: SocketAddr,
) -> Res<(Sender, hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>)> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(hyper::client::conn::http1::handshake(TokioIo::new(s)).await?)
}

async fn keep_alive(addr: SocketAddr) -> Res<Sender> {
    let (tx, conn) = connect(addr).await?;
    tokio::spawn(conn);
    Ok(tx)
}

/// One request and its whole answer, which must be 200 with the expected body.
async fn exchange(tx: &mut Sender, get: &Get, close: bool) -> Res<()> {
    tx.ready().await?;
    let resp = tx.send_request(get.request(close)).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != hyper::StatusCode::OK || body.len() != get.expect {
        return Err(format!("{} {}: {status} with {} bytes", get.addr, get.path, body.len()).into());
    }
    Ok(())
}

/// One request on a connection of its own.
async fn exchange_new(get: &Get) -> Res<()> {
    let (mut tx, conn) = connect(get.addr).await?;
    let (done, ended) = tokio::join!(
        async move {
            let r = exchange(&mut tx, get, true).await;
            drop(tx);
            r
        },
        conn
    );
    done?;
    ended?;
    Ok(())
}

/// What a rate measurement counted, and over how long.
#[derive(Default, Clone, Copy)]
struct Slice {
    done: u64,
    elapsed: Duration,
}

impl Slice {
    fn add(&mut self, other: Slice) {
        self.done += other.done;
        self.elapsed += other.elapsed;
    }

    fn per_sec(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// Requests of `conc` workers over `dur`: each on one kept-alive connection, or
/// each request on a new one. Connections are opened before the clock starts.
async fn rate(get: Arc<Get>, conc: usize, dur: Duration, keep: bool) -> Res<Slice> {
    let w = Workers::new(conc);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let Workers { count, errors, stop, start } = w.clone();
        let get = get.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = if keep { keep_alive(get.addr).await.ok() } else { None };
            start.wait().await;
            while !stop.load(Relaxed) {
                let one = if keep {
                    match tx.as_mut() {
                        Some(tx) => exchange(tx, &get, false).await,
                        None => match keep_alive(get.addr).await {
                            Ok(t) => {
                                tx = Some(t);
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                    }
                } else {
                    exchange_new(&get).await
                };
                match one {
                    Ok(()) => count.fetch_add(1, Relaxed),
                    Err(_) => {
                        tx = None;
                        errors.fetch_add(1, Relaxed)
                    }
                };
            }
        }));
    }
    w.measure(dur, tasks, &format!("requests to {}{}", get.addr, get.path)).await
}

/// Latency (µs) of `count` requests to each of `gets`, one at a time on one connection
/// each, taken in turn (the order rotating) so that every target sees the same moments of
/// the machine's load: (p50, p99) per target.
async fn latency(gets: &[Get], count: usize) -> Res<Vec<(f64, f64)>> {
    let mut conns = Vec::new();
    for get in gets {
        let mut tx = keep_alive(get.addr).await?;
        for _ in 0..100 {
            exchange(&mut tx, get, false).await?;
        }
        conns.push(tx);
    }
    let mut samples = vec![Vec::with_capacity(count); gets.len()];
    for i in 0..count {
        for k in 0..gets.len() {
            let j = (i + k) % gets.len();
            let t0 = Instant::now();
            exchange(&mut conns[j], &gets[j], false).await?;
            samples[j].push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
            (pct(0.50), pct(0.99))
        })
        .collect())
}

/// WebSocket messages echoed per second over `conns` connections, each sending one small
/// message and waiting for its echo.
async fn ws_rate(addr: SocketAddr, path: &str, auth: &HeaderValue, conns: usize, dur: Duration) -> Res<Slice> {
    let w = Workers::new(conns);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut req = format!("ws://{addr}{path}").into_client_request()?;
        req.headers_mut().insert(header::AUTHORIZATION, auth.clone());
        let Workers { count, errors, stop, start } = w.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok::<_, BoxError>(tokio_tungstenite::client_async(req, s).await?.0)
            };
            let ws = opened.await;
            start.wait().await;
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    eprintln!("  note: WebSocket to {addr}{path} failed: {e}");
                    errors.fetch_add(1, Relaxed);
                    return;
                }
            };
            while !stop.load(Relaxed) {
                if ws.send(Message::binary(Bytes::from_static(&WS_MESSAGE))).await.is_err() {
                    errors.fetch_add(1, Relaxed);
                    return;
                }
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b.len() == WS_MESSAGE.len() => count.fetch_add(1, Relaxed),
                    _ => {
                        errors.fetch_add(1, Relaxed);
                        return;
                    }
                };
            }
            let _ = ws.close(None).await;
        }));
    }
    w.measure(dur, tasks, &format!("WebSockets to {addr}{path}")).await
}

/// What the workers of one rate share: what they did, what failed, when to stop, and the
/// barrier they all pass (with the clock's owner) once their connections are open.
#[derive(Clone)]
struct Workers {
    count: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    start: Arc<Barrier>,
}

impl Workers {
    fn new(n: usize) -> Workers {
        Workers {
            count: Arc::default(),
            errors: Arc::default(),
            stop: Arc::default(),
            start: Arc::new(Barrier::new(n + 1)),
        }
    }

    /// Start the workers `tasks` together, count what they do in `dur`, stop and join them;
    /// failures are noted as `what` failed.
    async fn measure(self, dur: Duration, tasks: Vec<tokio::task::JoinHandle<()>>, what: &str) -> Res<Slice> {
        self.start.wait().await;
        let started = Instant::now();
        tokio::time::sleep(dur).await;
        let (done, elapsed) = (self.count.load(Relaxed), started.elapsed());
        self.stop.store(true, Relaxed);
        for t in tasks {
            t.await?;
        }
        let errors = self.errors.load(Relaxed);
        if errors > 0 {
            eprintln!("  note: {errors} failed {what}");
        }
        Ok(Slice { done, elapsed })
    }
}

/// One of the two proxies as the client reaches it.
struct Side {
    addr: SocketAddr,
    /// What the session variant sends: vt's session cookie, or Caddy's basic header.
    session: (header::HeaderName, HeaderValue),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteTo {
    Ide,
    Port,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Basic,
    Session,
}

#[derive(Clone, Copy)]
enum Metric {
    Rate { route: RouteTo, auth: Auth, keep: bool, conc: usize },
    AddedP50,
    AddedP99,
    WsEcho,
}

impl Metric {
    fn label(&self, p: &Params) -> String {
        match *self {
            Metric::Rate { route, auth, keep, conc } => format!(
                "{} {} req/s c={conc} {} (^)",
                if route == RouteTo::Ide { "ide" } else { "port" },
                if keep { "keep-alive" } else { "new-conn" },
                if auth == Auth::Basic { "basic" } else { "session" },
            ),
            Metric::AddedP50 => "ide added p50 us c=1 basic (v)".into(),
            Metric::AddedP99 => "ide added p99 us c=1 basic (v)".into(),
            Metric::WsEcho => format!("ide ws echo msg/s x{} basic (^)", p.ws_conns),
        }
    }
}

fn metrics(p: &Params) -> Vec<Metric> {
    let mut m = Vec::new();
    for (route, auth, keep) in [
        (RouteTo::Ide, Auth::Basic, true),
        (RouteTo::Port, Auth::Basic, true),
        (RouteTo::Ide, Auth::Session, true),
        (RouteTo::Ide, Auth::Basic, false),
    ] {
        for &conc in &p.concurrency {
            m.push(Metric::Rate { route, auth, keep, conc });
        }
    }
    m.extend([Metric::AddedP50, Metric::AddedP99, Metric::WsEcho]);
    m.retain(|m| p.only.as_ref().is_none_or(|only| m.label(p).contains(only.as_str())));
    m
}

/// Paths through either proxy.
struct Paths {
    ide: String,
    port: String,
    ws: String,
}

/// What the backend must see through either proxy.
fn check_forwarding(seen: &str, backend: &str, prefix: &str, host: SocketAddr) -> Res<()> {
    let want = format!(
        "backend={backend} path=/check authorization=- x-forwarded-for=127.0.0.1 x-forwarded-proto=http \
         x-forwarded-host={host} x-forwarded-prefix={prefix}"
    );
    if seen != want {
        return Err(format!("through {host} the backend saw\n  {seen}\nnot\n  {want}").into());
    }
    Ok(())
}

async fn get_text(addr: SocketAddr, path: &str, auth: &HeaderValue) -> Res<hyper::Response<Bytes>> {
    let mut tx = keep_alive(addr).await?;
    let get = Get::new(addr, path.to_owned(), Some((header::AUTHORIZATION, auth.clone())), 0);
    let resp = tx.send_request(get.request(false)).await?;
    let (parts, body) = resp.into_parts();
    Ok(hyper::Response::from_parts(parts, body.collect().await?.to_bytes()))
}

async fn run(p: Params, ide: SocketAddr, registered: SocketAddr) -> Res<()> {
    let started = Instant::now();
    let load_before = loadavg();
    let version = caddy_output(&["version"]).await?;
    let hash = caddy_output(&["hash-password", "--plaintext", PASSWORD]).await?;
    let dir = std::env::temp_dir().join(format!("vt-front-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The children are killed when dropped, on success or error; the directory goes either way.
    let result = run_in(&p, ide, registered, &hash, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    print_table(&p, &result?, &version, &load_before, started.elapsed());
    Ok(())
}

/// Start both proxies (Caddy's files in `dir`) and measure them.
async fn run_in(p: &Params, ide: SocketAddr, registered: SocketAddr, hash: &str, dir: &Path) -> Res<Vec<Row>> {
    let (vt_port, caddy_port) = (free_port()?, free_port()?);
    let mut vt = Command::new(std::env::current_exe()?)
        .args(["--serve-front", &vt_port.to_string(), &ide.port().to_string(), &registered.port().to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let cfg = dir.join("Caddyfile");
    std::fs::write(&cfg, caddyfile(caddy_port, ide, registered, hash))?;
    let mut caddy = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&cfg)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run caddy (apt-get install -y caddy): {e}"))?;
    wait_ready(vt_port, &mut vt, "vt front").await?;
    wait_ready(caddy_port, &mut caddy, "caddy").await?;
    let result = measure_all(p, ide, registered, vt_port, caddy_port).await;
    let _ = vt.kill().await;
    let _ = caddy.kill().await;
    result
}

struct Row {
    label: String,
    vt: Vec<f64>,
    caddy: Vec<f64>,
    direct: Vec<f64>,
}

async fn measure_all(
    p: &Params,
    ide: SocketAddr,
    registered: SocketAddr,
    vt_port: u16,
    caddy_port: u16,
) -> Res<Vec<Row>> {
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let basic = HeaderValue::from_str(&basic)?;
    let n = registered.port();
    let paths = Paths {
        ide: format!("/workspace/{WORKSPACE}/file"),
        port: format!("/workspace/{WORKSPACE}/port/{n}/file"),
        ws: format!("/workspace/{WORKSPACE}/ws"),
    };

    // Both proxies forward the same request the same way, and let the same header in.
    let (vt_addr, caddy_addr) = (local(vt_port), local(caddy_port));
    let mut vt_cookie = None;
    for addr in [vt_addr, caddy_addr] {
        for (path, backend, prefix) in [
            (format!("/workspace/{WORKSPACE}/check"), "ide", format!("/workspace/{WORKSPACE}")),
            (format!("/workspace/{WORKSPACE}/port/{n}/check"), "port", format!("/workspace/{WORKSPACE}/port/{n}")),
        ] {
            let resp = get_text(addr, &path, &basic).await?;
            check_forwarding(&String::from_utf8_lossy(resp.body()), backend, &prefix, addr)?;
            if addr == vt_addr {
                vt_cookie = resp
                    .headers()
                    .get(header::SET_COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .and_then(|v| HeaderValue::from_str(v).ok());
            }
        }
        let wrong = HeaderValue::from_static("Basic dnQ6d3Jvbmc=");
        let refused = get_text(addr, &paths.ide, &wrong).await?;
        if refused.status() != hyper::StatusCode::UNAUTHORIZED {
            return Err(format!("{addr} let a wrong password in: {}", refused.status()).into());
        }
    }
    let vt_cookie = vt_cookie.ok_or("the vt front set no session cookie")?;
    let vt = Side { addr: vt_addr, session: (header::COOKIE, vt_cookie) };
    let caddy = Side { addr: caddy_addr, session: (header::AUTHORIZATION, basic.clone()) };

    let metrics = metrics(p);
    let mut rows: Vec<Row> = metrics
        .iter()
        .map(|m| Row { label: m.label(p), vt: Vec::new(), caddy: Vec::new(), direct: Vec::new() })
        .collect();
    for round in 0..p.rounds {
        eprintln!("round {} of {} (load {}) ...", round + 1, p.rounds, loadavg());
        // Which proxy goes first alternates, so neither always follows the other's leftovers.
        let order: [(&Side, bool); 2] =
            if round % 2 == 0 { [(&vt, true), (&caddy, false)] } else { [(&caddy, false), (&vt, true)] };
        // Latency straight to the backend and through each proxy, measured the same way, in turn.
        let auth = || Some((header::AUTHORIZATION, basic.clone()));
        let gets = [
            Get::new(ide, "/file".into(), auth(), p.body_bytes),
            Get::new(vt.addr, paths.ide.clone(), auth(), p.body_bytes),
            Get::new(caddy.addr, paths.ide.clone(), auth(), p.body_bytes),
        ];
        let lat = if metrics.iter().any(|m| matches!(m, Metric::AddedP50 | Metric::AddedP99)) {
            latency(&gets, p.latency_requests).await?
        } else {
            vec![(0.0, 0.0); 3]
        };
        let (direct, lat) = (lat[0], [lat[1], lat[2]]);
        for (i, m) in metrics.iter().enumerate() {
            let mut got = [0.0; 2];
            match *m {
                Metric::AddedP50 | Metric::AddedP99 => {
                    for (k, (p50, p99)) in lat.iter().enumerate() {
                        let (at, direct) =
                            if matches!(m, Metric::AddedP50) { (p50, direct.0) } else { (p99, direct.1) };
                        got[k] = (at - direct).max(0.0);
                    }
                }
                Metric::Rate { .. } | Metric::WsEcho => {
                    // A rate is taken in slices, vt's and Caddy's in turn (the first alternating),
                    // so both see the same swings of the machine's load.
                    let mut total = [Slice::default(); 2];
                    for slice in 0..p.slices {
                        let turn = if slice % 2 == 0 { order } else { [order[1], order[0]] };
                        for (side, is_vt) in turn {
                            let dur = p.secs / p.slices as u32;
                            let counted = match *m {
                                Metric::Rate { route, auth, keep, conc } => {
                                    let path = if route == RouteTo::Ide { &paths.ide } else { &paths.port };
                                    let credential = match auth {
                                        Auth::Basic => (header::AUTHORIZATION, basic.clone()),
                                        Auth::Session => side.session.clone(),
                                    };
                                    let get =
                                        Arc::new(Get::new(side.addr, path.clone(), Some(credential), p.body_bytes));
                                    rate(get, conc, dur, keep).await?
                                }
                                _ => ws_rate(side.addr, &paths.ws, &basic, p.ws_conns, dur).await?,
                            };
                            total[usize::from(!is_vt)].add(counted);
                        }
                    }
                    got = [total[0].per_sec(), total[1].per_sec()];
                }
            }
            rows[i].vt.push(got[0]);
            rows[i].caddy.push(got[1]);
            rows[i].direct.push(match m {
                Metric::AddedP50 => direct.0,
                Metric::AddedP99 => direct.1,
                _ => f64::NAN,
            });
        }
    }
    Ok(rows)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn print_table(p: &Params, rows: &[Row], version: &str, load_before: &str, took: Duration) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "vt-front vs Caddy {} on loopback, {} rounds of {:.1} s per rate in {} slices, {} B responses, {} latency \
         requests, {cpus} CPUs, load {load_before} before, {} after",
        version.split_whitespace().next().unwrap_or(version),
        p.rounds,
        p.secs.as_secs_f64(),
        p.slices,
        p.body_bytes,
        p.latency_requests,
        loadavg(),
    );
    println!("{:<38} {:>10} {:>10} {:>9} {:>13} {:>10}", "metric", "vt", "caddy", "vt/caddy", "min-max", "direct");
    for r in rows {
        let ratios: Vec<f64> = r.vt.iter().zip(&r.caddy).filter(|(_, c)| **c > 0.0).map(|(v, c)| v / c).collect();
        let (vt, caddy) = (median(&r.vt), median(&r.caddy));
        let ratio = if caddy > 0.0 { format!("{:.2}", vt / caddy) } else { "n/a".into() };
        let spread = match (ratios.iter().copied().reduce(f64::min), ratios.iter().copied().reduce(f64::max)) {
            (Some(lo), Some(hi)) => format!("{lo:.2}-{hi:.2}"),
            _ => "n/a".into(),
        };
        let direct = median(&r.direct);
        let direct = if direct.is_nan() { String::new() } else { format!("{direct:.1}") };
        let prec = if r.label.contains(" us ") { 1 } else { 0 };
        println!("{:<38} {:>10.prec$} {:>10.prec$} {:>9} {:>13} {:>10}", r.label, vt, caddy, ratio, spread, direct);
    }
    println!(
        "(^) higher is better, (v) lower is better; vt/caddy is the ratio of the medians, min-max the ratio's \
         range over the rounds; session = vt's session cookie, Caddy's basic header (it has no session); \
         total {:.1} s",
        took.as_secs_f64()
    );
}
