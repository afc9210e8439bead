//! Side-by-side loopback benchmark of vt-ingress and HAProxy (TCP mode).
//!
//! Usage: `vt-ingress-bench [--quick] [--rounds N] [--only throughput|connections|latency]
//! [--concurrency N] [--rtts N] [--haproxy-splice]` (needs `haproxy` on PATH; `VT_INGRESS_WORKERS`
//! sets the threads of both proxies, one per CPU by default).
//!
//! Both proxies run as child processes in front of one in-process echo
//! backend, for two scenarios: raw TCP forwarding and SNI passthrough (the
//! client sends a real rustls ClientHello for `bench.test` first, which both
//! proxies inspect, then raw bytes; the backend never speaks TLS, so the
//! numbers measure the proxies rather than TLS crypto). Measured for each:
//! bulk throughput over one connection, connections per second (connect,
//! one exchange, close) and round-trip latency of 64-byte messages (10,000 per
//! round, or `--rtts`), reported
//! as latency added over a direct connection to the backend. The three
//! targets (direct, vt, HAProxy) take turns slice by slice within a round;
//! the table gives each metric's median and [min-max] over the rounds, for
//! each side and for the ratio taken per round (docs/ingress.md).
//!
//! Internal mode: `vt-ingress-bench --serve-ingress <table.json>` runs the
//! ingress on loopback with the given persisted table (used as the child).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use vt_ingress::{Backend, Ingress, IngressConfig, Protocol, Route, RouteTable};

const SNI_HOST: &str = "bench.test";

struct Params {
    rounds: usize,
    /// Threads of each proxy: vt's workers and HAProxy's `nbthread`.
    threads: usize,
    haproxy_splice: bool,
    /// Measure only this metric (`throughput`, `connections`, `latency`).
    only: Option<&'static str>,
    bulk_bytes: u64,
    rtt_count: usize,
    cps_duration: Duration,
    cps_concurrency: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--serve-ingress" {
        // The ingress child: its data plane runs on its own worker threads
        // (VT_INGRESS_WORKERS, one per CPU by default, like HAProxy's
        // nbthread); this runtime only starts it.
        let workers = std::env::var("VT_INGRESS_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        rt.block_on(serve_ingress(PathBuf::from(&args[2]), workers));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let quick = args.iter().any(|a| a == "--quick");
    let threads = std::env::var("VT_INGRESS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let haproxy_splice = args.iter().any(|a| a == "--haproxy-splice");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .and_then(|m| ["throughput", "connections", "latency"].into_iter().find(|k| k == m));
    let rounds = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
    let mut params = if quick {
        Params {
            rounds: 1,
            threads,
            haproxy_splice,
            only,
            bulk_bytes: 64 << 20,
            rtt_count: 500,
            cps_duration: Duration::from_millis(500),
            cps_concurrency: 8,
        }
    } else {
        Params {
            rounds: 5,
            threads,
            haproxy_splice,
            only,
            bulk_bytes: 256 << 20,
            // A p99 of 3000 samples rests on its 30 slowest: rounds swung 0.86-1.75x on it.
            rtt_count: 10_000,
            cps_duration: Duration::from_secs(2),
            cps_concurrency: 16,
        }
    };
    if let Some(r) = rounds {
        params.rounds = r;
    }
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok());
    if let Some(c) = flag("--concurrency") {
        params.cps_concurrency = c;
    }
    if let Some(n) = flag("--rtts") {
        params.rtt_count = n;
    }
    if let Err(e) = rt.block_on(run(params)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn serve_ingress(path: PathBuf, workers: usize) {
    let config = IngressConfig {
        bind_addrs: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        state_path: Some(path),
        workers,
        ..IngressConfig::default()
    };
    let _ingress = Ingress::start(config).await.expect("start ingress");
    std::future::pending::<()>().await;
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn echo_backend() -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                // Not zeroed per connection: the backend should cost little.
                let mut buf = Vec::with_capacity(64 * 1024);
                loop {
                    buf.clear();
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if s.write_all(&buf).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn haproxy_config(backend: SocketAddr, tcp_port: u16, sni_port: u16, threads: usize, splice: bool) -> String {
    let splice = if splice { "    option splice-auto\n" } else { "" };
    format!(
        "global\n\
         \x20   maxconn 4000\n\
         \x20   nbthread {threads}\n\
         defaults\n\
         \x20   mode tcp\n\
         {splice}\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         frontend tcp_in\n\
         \x20   bind 127.0.0.1:{tcp_port}\n\
         \x20   default_backend echo\n\
         frontend sni_in\n\
         \x20   bind 127.0.0.1:{sni_port}\n\
         \x20   tcp-request inspect-delay 5s\n\
         \x20   tcp-request content accept if {{ req.ssl_hello_type 1 }}\n\
         \x20   use_backend echo if {{ req.ssl_sni -i {SNI_HOST} }}\n\
         backend echo\n\
         \x20   server s1 {backend}\n"
    )
}

/// HAProxy on two free ports, its log in `dir`. A port another socket took between its
/// probe and HAProxy's bind makes HAProxy exit: tried again on new ports, three times in all.
async fn start_haproxy(dir: &Path, backend: SocketAddr, p: &Params) -> Res<(Child, u16, u16)> {
    let cfg_path = dir.join("haproxy.cfg");
    let log_path = dir.join("haproxy.log");
    let mut attempt = 1;
    loop {
        let (tcp, sni) = (free_port()?, free_port()?);
        std::fs::write(&cfg_path, haproxy_config(backend, tcp, sni, p.threads, p.haproxy_splice))?;
        let mut ha = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run haproxy (apt-get install -y haproxy): {e}"))?;
        let ready = match wait_ready(tcp, &mut ha, "haproxy").await {
            Ok(()) => wait_ready(sni, &mut ha, "haproxy").await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(()) => return Ok((ha, tcp, sni)),
            Err(e) => {
                let _ = ha.kill().await;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if attempt == 3 {
                    return Err(format!("{e}; its log: {}", log.trim()).into());
                }
                eprintln!("haproxy did not start ({e}; its log: {}); again on other ports", log.trim());
                attempt += 1;
            }
        }
    }
}

async fn wait_ready(port: u16, child: &mut Child, what: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
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

#[derive(Clone, Copy)]
struct Target {
    addr: SocketAddr,
    sni: bool,
}

/// Connect and, for SNI targets, send the ClientHello and read its echo.
async fn open(t: Target, hello: &[u8]) -> Res<TcpStream> {
    let mut s = TcpStream::connect(t.addr).await?;
    s.set_nodelay(true)?;
    if t.sni {
        s.write_all(hello).await?;
        let mut back = vec![0u8; hello.len()];
        s.read_exact(&mut back).await?;
    }
    Ok(s)
}

/// Seconds to send `bytes` through `t` and read them back (one connection).
async fn throughput(t: Target, hello: &[u8], bytes: u64) -> Res<f64> {
    let s = open(t, hello).await?;
    let (mut r, mut w) = s.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Err("early eof".into());
        }
        got += n as u64;
    }
    let elapsed = started.elapsed();
    writer.await??;
    Ok(elapsed.as_secs_f64())
}

/// Connections completed within about `dur` by `conc` clients, and the seconds taken.
async fn connections(t: Target, hello: &Arc<Vec<u8>>, dur: Duration, conc: usize) -> Res<(u64, f64)> {
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (count, errors, stop, hello) = (count.clone(), errors.clone(), stop.clone(), hello.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let one = async {
                    let mut s = open(t, &hello).await?;
                    if !t.sni {
                        s.write_all(b"x").await?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await?;
                    }
                    Ok::<_, Box<dyn std::error::Error>>(())
                };
                match one.await {
                    Ok(()) => count.fetch_add(1, Relaxed),
                    Err(_) => errors.fetch_add(1, Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let errors = errors.load(Relaxed);
    if errors > 0 {
        eprintln!("  note: {errors} failed connections to {}", t.addr);
    }
    Ok((count.load(Relaxed), elapsed))
}

/// Round-trip times (µs) of 64-byte messages: (p50, p99) of each target,
/// one connection each, taking one sample of each target in turn so that
/// whatever else runs on the machine hits all of them alike.
async fn latencies(targets: &[Target; 3], hello: &[u8], count: usize) -> Res<[(f64, f64); 3]> {
    let mut conns = Vec::new();
    for t in targets {
        conns.push(open(*t, hello).await?);
    }
    let msg = [0x42u8; 64];
    let mut back = [0u8; 64];
    let mut samples = [Vec::with_capacity(count), Vec::with_capacity(count), Vec::with_capacity(count)];
    for i in 0..count + 200 {
        for j in 0..3 {
            // Rotate who goes first.
            let k = (i + j) % 3;
            let t0 = Instant::now();
            conns[k].write_all(&msg).await?;
            conns[k].read_exact(&mut back).await?;
            if i >= 200 {
                samples[k].push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    Ok(samples.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        (pct(0.50), pct(0.99))
    }))
}

/// One round's numbers for one target.
#[derive(Default, Clone, Copy)]
struct Numbers {
    mbps: f64,
    cps: f64,
    p50: f64,
    p99: f64,
}

/// Slices of each throughput and connection measurement per round: the
/// targets take turns slice by slice (the order rotating), so a burst of load
/// from elsewhere falls on all of them rather than on one.
const SLICES: usize = 8;

/// One round over (direct, vt, haproxy).
async fn measure_round(targets: [Target; 3], hello: &Arc<Vec<u8>>, p: &Params) -> Res<[Numbers; 3]> {
    let lat = if p.only.is_none_or(|m| m == "latency") {
        latencies(&targets, hello, p.rtt_count).await?
    } else {
        [(f64::NAN, f64::NAN); 3]
    };
    let (mut secs, mut conns, mut conn_secs) = ([f64::NAN; 3], [0u64; 3], [f64::NAN; 3]);
    let slice_bytes = p.bulk_bytes / SLICES as u64;
    if p.only.is_none_or(|m| m == "throughput") {
        secs = [0.0; 3];
    }
    if p.only.is_none_or(|m| m == "connections") {
        conn_secs = [0.0; 3];
    }
    for i in 0..SLICES * usize::from(secs[0] == 0.0) {
        for j in 0..3 {
            let k = (i + j) % 3;
            secs[k] += throughput(targets[k], hello, slice_bytes).await?;
        }
    }
    for i in 0..SLICES * usize::from(conn_secs[0] == 0.0) {
        for j in 0..3 {
            let k = (i + j) % 3;
            let (n, s) = connections(targets[k], hello, p.cps_duration / SLICES as u32, p.cps_concurrency).await?;
            conns[k] += n;
            conn_secs[k] += s;
        }
    }
    Ok(std::array::from_fn(|k| Numbers {
        mbps: (slice_bytes * SLICES as u64) as f64 / secs[k] / 1e6,
        cps: conns[k] as f64 / conn_secs[k],
        p50: lat[k].0,
        p99: lat[k].1,
    }))
}

fn write_table(path: &Path, backend: SocketAddr, tcp_port: u16, sni_port: u16) -> Res<()> {
    let backends = vec![Backend { addr: backend, healthy: true }];
    let table = RouteTable {
        version: 1,
        routes: vec![
            Route {
                id: "bench-tcp".into(),
                protocol: Protocol::Tcp,
                hostname: None,
                listen_port: tcp_port,
                proxy_protocol: false,
                backends: backends.clone(),
            },
            Route {
                id: "bench-sni".into(),
                protocol: Protocol::Tls,
                hostname: Some(SNI_HOST.into()),
                listen_port: sni_port,
                proxy_protocol: false,
                backends,
            },
        ],
    };
    table.save(path)?;
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Per round: what the direct connection, vt and HAProxy measured.
type Round = (Numbers, Numbers, Numbers);

/// One metric's value for (direct, vt, haproxy) in a round, and whether
/// higher is better.
struct Metric {
    name: &'static str,
    higher_is_better: bool,
    decimals: usize,
    values: fn(&Round) -> (f64, f64, f64),
}

const METRICS: [Metric; 4] = [
    Metric { name: "throughput MB/s", higher_is_better: true, decimals: 0, values: |r| (r.0.mbps, r.1.mbps, r.2.mbps) },
    Metric { name: "connections/s", higher_is_better: true, decimals: 0, values: |r| (r.0.cps, r.1.cps, r.2.cps) },
    // Latency added over the direct connection measured in the same round.
    Metric {
        name: "added p50 us",
        higher_is_better: false,
        decimals: 1,
        values: |r| (r.0.p50, (r.1.p50 - r.0.p50).max(0.0), (r.2.p50 - r.0.p50).max(0.0)),
    },
    Metric {
        name: "added p99 us",
        higher_is_better: false,
        decimals: 1,
        values: |r| (r.0.p99, (r.1.p99 - r.0.p99).max(0.0), (r.2.p99 - r.0.p99).max(0.0)),
    },
];

/// `median [min-max]` of `v`, leaving out values that are not finite (a
/// ratio over an added latency of 0, when the direct connection's own tail
/// was the slowest that round), counted as `n/a`.
fn spread(v: &[f64], decimals: usize) -> String {
    let mut f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return "n/a".into();
    }
    f.sort_by(|a, b| a.total_cmp(b));
    let (min, max, med) = (f[0], f[f.len() - 1], f[f.len() / 2]);
    let skipped = match v.len() - f.len() {
        0 => String::new(),
        n => format!(" {n}n/a"),
    };
    format!("{med:.decimals$} [{min:.decimals$}-{max:.decimals$}]{skipped}")
}

async fn run(p: Params) -> Res<()> {
    let started = Instant::now();
    let load_before = load_average();
    let backend = echo_backend().await?;
    let dir = std::env::temp_dir().join(format!("vt-ingress-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (vt_tcp, vt_sni) = (free_port()?, free_port()?);

    let table_path = dir.join("routes.json");
    write_table(&table_path, backend, vt_tcp, vt_sni)?;
    let mut vt = Command::new(std::env::current_exe()?)
        .arg("--serve-ingress")
        .arg(&table_path)
        .env("VT_INGRESS_WORKERS", p.threads.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_ready(vt_tcp, &mut vt, "vt-ingress").await?;
    wait_ready(vt_sni, &mut vt, "vt-ingress").await?;
    let (mut ha, ha_tcp, ha_sni) = start_haproxy(&dir, backend, &p).await?;

    let hello = Arc::new(vt_ingress::testing::rustls_client_hello(SNI_HOST));
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let scenarios = [("tcp", false, vt_tcp, ha_tcp), ("sni", true, vt_sni, ha_sni)];
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); scenarios.len()];
    for round in 0..p.rounds {
        for (i, &(scenario, sni, vt_port, ha_port)) in scenarios.iter().enumerate() {
            eprintln!("round {} of {}: {scenario} (load {})", round + 1, p.rounds, load_average());
            let targets = [backend, local(vt_port), local(ha_port)].map(|addr| Target { addr, sni });
            let [d, o, h] = measure_round(targets, &hello, &p).await?;
            rounds[i].push((d, o, h));
        }
    }
    let _ = vt.kill().await;
    let _ = ha.kill().await;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "vt-ingress vs HAProxy on loopback: {} rounds (bulk {} MiB, {} RTTs of 64 B, conn/s over {:?} x{}), \
         {} CPUs, {} threads each{}",
        p.rounds,
        p.bulk_bytes >> 20,
        p.rtt_count,
        p.cps_duration,
        p.cps_concurrency,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        p.threads,
        if p.haproxy_splice { ", haproxy with option splice-auto" } else { "" },
    );
    println!("load average before: {load_before}, after: {}", load_average());
    println!("each cell: median [min-max] over the rounds; the ratio is taken per round");
    println!(
        "{:<5} {:<19} {:>20} {:>20} {:>20} {:>20}",
        "mode", "metric", "direct", "vt-ingress", "haproxy", "vt/haproxy"
    );
    for (&(scenario, ..), rounds) in scenarios.iter().zip(&rounds) {
        for m in &METRICS {
            let vals: Vec<(f64, f64, f64)> = rounds.iter().map(m.values).collect();
            let column = |f: fn(&(f64, f64, f64)) -> f64| vals.iter().map(f).collect::<Vec<_>>();
            let ratios: Vec<f64> = vals.iter().map(|v| if v.2 > 0.0 { v.1 / v.2 } else { f64::NAN }).collect();
            println!(
                "{:<5} {:<19} {:>20} {:>20} {:>20} {:>20}",
                scenario,
                format!("{} ({})", m.name, if m.higher_is_better { "^" } else { "v" }),
                spread(&column(|v| v.0), m.decimals),
                spread(&column(|v| v.1), m.decimals),
                spread(&column(|v| v.2), m.decimals),
                spread(&ratios, 2),
            );
        }
    }
    println!("(^) higher is better, (v) lower is better; direct of the latency rows is the raw RTT");
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
