//! Side-by-side loopback benchmark of vt-ingress and HAProxy (TCP mode).
//!
//! Usage: `vt-ingress-bench [--quick]` (needs `haproxy` on PATH).
//!
//! Both proxies run as child processes in front of one in-process echo
//! backend, for two scenarios: raw TCP forwarding and SNI passthrough (the
//! client sends a real rustls ClientHello for `bench.test` first, which both
//! proxies inspect, then raw bytes; the backend never speaks TLS, so the
//! numbers measure the proxies rather than TLS crypto). Measured for each:
//! bulk throughput over one connection, connections per second (connect,
//! one exchange, close) and round-trip latency of 64-byte messages, reported
//! as latency added over a direct connection to the backend.
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
    bulk_bytes: u64,
    rtt_count: usize,
    cps_duration: Duration,
    cps_concurrency: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--serve-ingress" {
        // The ingress child: as many workers as CPUs (like HAProxy's default
        // nbthread) unless VT_INGRESS_WORKERS says otherwise.
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = std::env::var("VT_INGRESS_WORKERS").ok().and_then(|v| v.parse().ok()) {
            builder.worker_threads(n);
        }
        let rt = builder.enable_all().build().expect("tokio runtime");
        rt.block_on(serve_ingress(PathBuf::from(&args[2])));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let quick = args.iter().any(|a| a == "--quick");
    let params = if quick {
        Params {
            rounds: 1,
            bulk_bytes: 64 << 20,
            rtt_count: 500,
            cps_duration: Duration::from_millis(500),
            cps_concurrency: 8,
        }
    } else {
        Params {
            rounds: 3,
            bulk_bytes: 256 << 20,
            rtt_count: 3000,
            cps_duration: Duration::from_secs(2),
            cps_concurrency: 16,
        }
    };
    if let Err(e) = rt.block_on(run(params)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn serve_ingress(path: PathBuf) {
    let config = IngressConfig {
        bind_addrs: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        state_path: Some(path),
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
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
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

fn haproxy_config(backend: SocketAddr, tcp_port: u16, sni_port: u16) -> String {
    format!(
        "global\n\
         \x20   maxconn 8000\n\
         defaults\n\
         \x20   mode tcp\n\
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
    Ok(bytes as f64 / elapsed.as_secs_f64() / 1e6)
}

async fn conns_per_sec(t: Target, hello: &Arc<Vec<u8>>, dur: Duration, conc: usize) -> Res<f64> {
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
    Ok(count.load(Relaxed) as f64 / elapsed)
}

/// Round-trip times (µs) of 64-byte messages on one connection: (p50, p99).
async fn latency(t: Target, hello: &[u8], count: usize) -> Res<(f64, f64)> {
    let mut s = open(t, hello).await?;
    let msg = [0x42u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..50 {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.50), pct(0.99)))
}

#[derive(Default, Clone, Copy)]
struct Numbers {
    mbps: f64,
    cps: f64,
    p50: f64,
    p99: f64,
}

async fn measure(t: Target, hello: &Arc<Vec<u8>>, p: &Params) -> Res<Numbers> {
    let (p50, p99) = latency(t, hello, p.rtt_count).await?;
    let mbps = throughput(t, hello, p.bulk_bytes).await?;
    let cps = conns_per_sec(t, hello, p.cps_duration, p.cps_concurrency).await?;
    Ok(Numbers { mbps, cps, p50, p99 })
}

fn median(runs: &[Numbers]) -> Numbers {
    let med = |f: &dyn Fn(&Numbers) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Numbers { mbps: med(&|n| n.mbps), cps: med(&|n| n.cps), p50: med(&|n| n.p50), p99: med(&|n| n.p99) }
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

async fn run(p: Params) -> Res<()> {
    let started = Instant::now();
    let backend = echo_backend().await?;
    let dir = std::env::temp_dir().join(format!("vt-ingress-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (vt_tcp, vt_sni, ha_tcp, ha_sni) = (free_port()?, free_port()?, free_port()?, free_port()?);

    let table_path = dir.join("routes.json");
    write_table(&table_path, backend, vt_tcp, vt_sni)?;
    let mut vt = Command::new(std::env::current_exe()?)
        .arg("--serve-ingress")
        .arg(&table_path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, haproxy_config(backend, ha_tcp, ha_sni))?;
    let mut ha = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run haproxy (apt-get install -y haproxy): {e}"))?;
    wait_ready(vt_tcp, &mut vt, "vt-ingress").await?;
    wait_ready(vt_sni, &mut vt, "vt-ingress").await?;
    wait_ready(ha_tcp, &mut ha, "haproxy").await?;
    wait_ready(ha_sni, &mut ha, "haproxy").await?;

    let hello = Arc::new(vt_ingress::testing::rustls_client_hello(SNI_HOST));
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let mut rows = Vec::new();
    for (scenario, sni, vt_port, ha_port) in [("tcp", false, vt_tcp, ha_tcp), ("sni", true, vt_sni, ha_sni)] {
        // Interleave the three targets over several rounds and keep each
        // metric's median, so load from other processes hits all alike.
        let (mut ds, mut os, mut hs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..p.rounds {
            eprintln!("measuring {scenario}, round {} of {} ...", round + 1, p.rounds);
            ds.push(measure(Target { addr: backend, sni }, &hello, &p).await?);
            os.push(measure(Target { addr: local(vt_port), sni }, &hello, &p).await?);
            hs.push(measure(Target { addr: local(ha_port), sni }, &hello, &p).await?);
        }
        rows.push((scenario, median(&ds), median(&os), median(&hs)));
    }
    let _ = vt.kill().await;
    let _ = ha.kill().await;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "vt-ingress vs HAProxy on loopback, median of {} rounds (bulk {} MiB, {} RTTs of 64 B, conn/s over {:?} x{}), {} CPUs",
        p.rounds,
        p.bulk_bytes >> 20,
        p.rtt_count,
        p.cps_duration,
        p.cps_concurrency,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{:<5} {:<24} {:>10} {:>12} {:>10} {:>14}",
        "mode", "metric", "direct", "vt-ingress", "haproxy", "vt/haproxy"
    );
    for (scenario, d, o, h) in rows {
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "n/a".into()
            }
        };
        println!(
            "{:<5} {:<24} {:>10.0} {:>12.0} {:>10.0} {:>14}",
            scenario,
            "throughput MB/s (^)",
            d.mbps,
            o.mbps,
            h.mbps,
            ratio(o.mbps, h.mbps)
        );
        println!(
            "{:<5} {:<24} {:>10.0} {:>12.0} {:>10.0} {:>14}",
            scenario,
            "connections/s (^)",
            d.cps,
            o.cps,
            h.cps,
            ratio(o.cps, h.cps)
        );
        let (a50, h50) = ((o.p50 - d.p50).max(0.0), (h.p50 - d.p50).max(0.0));
        let (a99, h99) = ((o.p99 - d.p99).max(0.0), (h.p99 - d.p99).max(0.0));
        println!("{:<5} {:<24} {:>10.1} {:>12.1} {:>10.1} {:>14}", scenario, "RTT p50 us", d.p50, o.p50, h.p50, "");
        println!(
            "{:<5} {:<24} {:>10} {:>12.1} {:>10.1} {:>14}",
            scenario,
            "added p50 us (v)",
            "",
            a50,
            h50,
            ratio(a50, h50)
        );
        println!("{:<5} {:<24} {:>10.1} {:>12.1} {:>10.1} {:>14}", scenario, "RTT p99 us", d.p99, o.p99, h.p99, "");
        println!(
            "{:<5} {:<24} {:>10} {:>12.1} {:>10.1} {:>14}",
            scenario,
            "added p99 us (v)",
            "",
            a99,
            h99,
            ratio(a99, h99)
        );
    }
    println!("(^) higher is better, (v) lower is better; total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
