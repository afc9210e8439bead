//! End-to-end tests on loopback with real TLS backends (rustls + rcgen).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use vt_ingress::proxy_v2::{self, Decoded, Header};
use vt_ingress::sni::{self, Detect};
use vt_ingress::testing::{connector, tls_backend};
use vt_ingress::{Backend, FailureReason, Ingress, IngressConfig, Protocol, RejectReason, Route, RouteTable};

const T: Duration = Duration::from_secs(10);

/// A port free on both loopback addresses right now.
fn free_port() -> u16 {
    loop {
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new("::1".parse::<IpAddr>().unwrap(), port)
}

/// An address that refuses connections.
fn refusing_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn tls_route(id: &str, host: &str, port: u16, backends: &[SocketAddr]) -> Route {
    Route {
        id: id.into(),
        protocol: Protocol::Tls,
        hostname: Some(host.into()),
        listen_port: port,
        proxy_protocol: false,
        backends: backends.iter().map(|&addr| Backend { addr, healthy: true }).collect(),
    }
}

fn tcp_route(id: &str, port: u16, backends: &[SocketAddr]) -> Route {
    Route { protocol: Protocol::Tcp, hostname: None, ..tls_route(id, "unused.test", port, backends) }
}

fn table(version: u64, routes: Vec<Route>) -> RouteTable {
    RouteTable { version, routes }
}

async fn start() -> Ingress {
    Ingress::start(IngressConfig::loopback()).await.unwrap()
}

/// A plain TCP server that sends `name\n` on accept, then echoes.
async fn tcp_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// TLS through the ingress; returns the backend's name after verifying the
/// certificate for `host` (which proves the handshake reached that backend).
/// One line from the stream; end of stream first fails the test.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> String {
    vt_ingress::testing::read_line(r).await.unwrap()
}

async fn tls_hello(conn: &TlsConnector, addr: SocketAddr, host: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = conn.connect(ServerName::try_from(host.to_owned()).unwrap(), tcp).await.unwrap();
    let name = read_line(&mut tls).await;
    tls.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut tls).await, "ping");
    name
}

#[tokio::test]
async fn two_hostnames_one_port_reach_their_backends() {
    timeout(T, async {
        let (a, cert_a) = tls_backend("A", "a.test").await;
        let (b, cert_b) = tls_backend("B", "b.test").await;
        let port = free_port();
        let ingress = start().await;
        ingress
            .apply(table(1, vec![tls_route("ra", "a.test", port, &[a]), tls_route("rb", "B.Test", port, &[b])]))
            .await
            .unwrap();
        let conn = connector(&[cert_a, cert_b]);
        for addr in [v4(port), v6(port)] {
            assert_eq!(tls_hello(&conn, addr, "a.test").await, "A");
            assert_eq!(tls_hello(&conn, addr, "b.test").await, "B");
            assert_eq!(tls_hello(&conn, addr, "B.TEST").await, "B");
        }
        let m = ingress.metrics();
        assert_eq!(m.route("ra").connections_total.load(Ordering::Relaxed), 2);
        assert_eq!(m.route("rb").connections_total.load(Ordering::Relaxed), 4);
        let text = ingress.metrics_text();
        assert!(text.contains("vt_ingress_route_connections_total{route=\"rb\"} 4\n"), "{text}");
        assert!(text.contains("vt_ingress_table_version 1\n"), "{text}");
    })
    .await
    .unwrap();
}

/// A backend that decodes a PROXY v2 header, reports it and the bytes that
/// follow it (up to `follow` bytes), then echoes.
async fn proxy_backend(follow: usize) -> (SocketAddr, mpsc::UnboundedReceiver<(Header, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let rest = loop {
                    if let Decoded::Complete { header, len } = proxy_v2::decode(&buf) {
                        if buf.len() >= len + follow {
                            let rest = buf[len..].to_vec();
                            let _ = tx.send((header, rest.clone()));
                            break rest;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                if s.write_all(&rest).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn proxy_v2_header_carries_the_real_client_address() {
    timeout(T, async {
        let (backend, mut seen) = proxy_backend(4).await;
        let port = free_port();
        let ingress = start().await;
        let mut route = tcp_route("pp", port, &[backend]);
        route.proxy_protocol = true;
        ingress.apply(table(1, vec![route])).await.unwrap();
        let mut open = Vec::new();
        for addr in [v4(port), v6(port)] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"data").await.unwrap();
            let (header, rest) = seen.recv().await.unwrap();
            assert_eq!(header, Header::Proxy { src: c.local_addr().unwrap(), dst: addr });
            assert_eq!(rest, b"data");
            let mut echo = [0u8; 4];
            c.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"data");
            open.push(c);
        }
        // Bytes are counted while connections are still open.
        let m = ingress.metrics().route("pp");
        for _ in 0..100 {
            if m.bytes_out.load(Ordering::Relaxed) == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(m.bytes_in.load(Ordering::Relaxed), 8);
        assert_eq!(m.bytes_out.load(Ordering::Relaxed), 8);
        assert_eq!(m.active.load(Ordering::Relaxed), 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn proxy_v2_header_precedes_the_client_hello_on_tls_routes() {
    timeout(T, async {
        let hello = vt_ingress::testing::rustls_client_hello("pp.test");
        let (backend, mut seen) = proxy_backend(hello.len()).await;
        let port = free_port();
        let ingress = start().await;
        let mut route = tls_route("pp", "pp.test", port, &[backend]);
        route.proxy_protocol = true;
        ingress.apply(table(1, vec![route])).await.unwrap();
        let mut c = TcpStream::connect(v4(port)).await.unwrap();
        // Send the ClientHello in two pieces to exercise reassembly.
        c.write_all(&hello[..10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(&hello[10..]).await.unwrap();
        let (header, rest) = seen.recv().await.unwrap();
        assert_eq!(header, Header::Proxy { src: c.local_addr().unwrap(), dst: v4(port) });
        assert_eq!(rest, hello, "the peeked bytes are forwarded unchanged");
        assert_eq!(sni::detect(&rest), Detect::Sni("pp.test".into()));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn route_changes_drop_no_established_connection() {
    timeout(Duration::from_secs(30), async {
        let (ta, cert_a) = tls_backend("TA", "t.test").await;
        let (tb, cert_b) = tls_backend("TB", "t.test").await;
        let a = tcp_backend("A").await;
        let b = tcp_backend("B").await;
        let gone_backend = tcp_backend("G").await;
        let (tls_port, tcp_port, gone_port, extra_port) = (free_port(), free_port(), free_port(), free_port());
        let ingress = start().await;
        ingress
            .apply(table(
                1,
                vec![
                    tls_route("t", "t.test", tls_port, &[ta]),
                    tcp_route("c", tcp_port, &[a]),
                    tcp_route("gone", gone_port, &[gone_backend]),
                ],
            ))
            .await
            .unwrap();
        let conn = connector(&[cert_a, cert_b]);

        // Long-lived connections opened before any change.
        let mut long_tls = Vec::new();
        for _ in 0..3 {
            let tcp = TcpStream::connect(v4(tls_port)).await.unwrap();
            let mut tls = conn.connect(ServerName::try_from("t.test").unwrap(), tcp).await.unwrap();
            assert_eq!(read_line(&mut tls).await, "TA");
            long_tls.push(tls);
        }
        let mut long_tcp = Vec::new();
        for port in [tcp_port, tcp_port, gone_port] {
            let mut s = BufReader::new(TcpStream::connect(v4(port)).await.unwrap());
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            long_tcp.push((s, line));
        }

        // A loop of fresh connections while tables change underneath.
        let failures = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let looper = {
            let (failures, done, conn) = (failures.clone(), done.clone(), conn.clone());
            tokio::spawn(async move {
                for i in 0..150 {
                    let ok = if i % 2 == 0 {
                        async {
                            let mut s = TcpStream::connect(v4(tcp_port)).await.ok()?;
                            let name = read_line(&mut s).await;
                            s.write_all(b"x").await.ok()?;
                            let mut x = [0u8; 1];
                            s.read_exact(&mut x).await.ok()?;
                            (name == "A" || name == "B").then_some(())
                        }
                        .await
                        .is_some()
                    } else {
                        let name = tls_hello(&conn, v4(tls_port), "t.test").await;
                        name == "TA" || name == "TB"
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        };

        for v in 2..22u64 {
            let flip = v % 2 == 0;
            let mut routes = vec![
                tls_route("t", "t.test", tls_port, &[if flip { tb } else { ta }]),
                tcp_route("c", tcp_port, &[if flip { b } else { a }]),
            ];
            if flip {
                routes.push(tcp_route("extra", extra_port, &[a]));
            }
            ingress.apply(table(v, routes)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        looper.await.unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 150);
        assert_eq!(failures.load(Ordering::Relaxed), 0);

        // The removed port is closed for new connections...
        assert!(TcpStream::connect(v4(gone_port)).await.is_err());
        // ...but every long-lived connection still talks to its original backend.
        for tls in &mut long_tls {
            tls.write_all(b"still\n").await.unwrap();
            assert_eq!(read_line(tls).await, "still");
        }
        for (s, first) in &mut long_tcp {
            assert!(first == "A\n" || first == "G\n", "{first:?}");
            s.get_mut().write_all(b"alive\n").await.unwrap();
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            assert_eq!(line, "alive\n");
        }
        // New connections follow the last table (v21: odd, backends A/TA).
        assert_eq!(tls_hello(&conn, v4(tls_port), "t.test").await, "TA");
        assert_eq!(ingress.table().version, 21);
        assert_eq!(ingress.metrics().route("gone").active.load(Ordering::Relaxed), 1);
    })
    .await
    .unwrap();
}

/// Wait until the ingress closes `s` (read returns EOF or an error).
async fn expect_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn rejects_are_closed_and_counted() {
    timeout(T, async {
        let (a, cert_a) = tls_backend("A", "a.test").await;
        let port = free_port();
        let config = IngressConfig { client_hello_timeout: Duration::from_millis(300), ..IngressConfig::loopback() };
        let ingress = Ingress::start(config).await.unwrap();
        ingress.apply(table(1, vec![tls_route("ra", "a.test", port, &[a])])).await.unwrap();
        let m = ingress.metrics();

        // Unknown SNI: the client only gets a closed connection.
        let conn = connector(std::slice::from_ref(&cert_a));
        let tcp = TcpStream::connect(v4(port)).await.unwrap();
        assert!(conn.connect(ServerName::try_from("c.test").unwrap(), tcp).await.is_err());

        // No SNI: rustls sends none when connecting to an IP address.
        let tcp = TcpStream::connect(v4(port)).await.unwrap();
        let ip = ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into());
        assert!(conn.connect(ip, tcp).await.is_err());

        // Garbage.
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
        expect_closed(&mut s).await;

        // Silence until the ClientHello timeout.
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        expect_closed(&mut s).await;
        assert!(started.elapsed() >= Duration::from_millis(250));

        // Half a ClientHello then close.
        let hello = vt_ingress::testing::rustls_client_hello("a.test");
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        s.write_all(&hello[..20]).await.unwrap();
        drop(s);

        // Counters are updated right after the close; poll briefly.
        for _ in 0..100 {
            if m.rejects(port, RejectReason::ClientClosed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(m.rejects(port, RejectReason::UnknownSni), 1);
        assert_eq!(m.rejects(port, RejectReason::NoSni), 1);
        assert_eq!(m.rejects(port, RejectReason::NotTls), 1);
        assert_eq!(m.rejects(port, RejectReason::Timeout), 1);
        assert_eq!(m.rejects(port, RejectReason::ClientClosed), 1);
        assert_eq!(m.route("ra").connections_total.load(Ordering::Relaxed), 0);
        let text = ingress.metrics_text();
        let line = format!("vt_ingress_listener_rejects_total{{port=\"{port}\",reason=\"unknown_sni\"}} 1\n");
        assert!(text.contains(&line), "{text}");

        // The route still works for the right name.
        assert_eq!(tls_hello(&conn, v4(port), "a.test").await, "A");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn failover_to_the_next_backend_when_one_refuses() {
    timeout(T, async {
        let good = tcp_backend("good").await;
        let dead = refusing_addr();
        let port = free_port();
        let ingress = start().await;
        let mut route = tcp_route("f", port, &[dead, good]);
        route.backends.push(Backend { addr: dead, healthy: false });
        ingress.apply(table(1, vec![route])).await.unwrap();
        for _ in 0..4 {
            let mut s = TcpStream::connect(v4(port)).await.unwrap();
            assert_eq!(read_line(&mut s).await, "good");
        }
        let m = ingress.metrics().route("f");
        assert_eq!(m.connections_total.load(Ordering::Relaxed), 4);
        // Round-robin starts on the dead backend every other connection.
        assert_eq!(m.backend_connect_errors.load(Ordering::Relaxed), 2);
        assert_eq!(m.failures(FailureReason::ConnectFailed), 0);

        // All backends refusing, or none healthy: closed and counted.
        let mut all_dead = tcp_route("f", port, &[dead]);
        ingress.apply(table(2, vec![all_dead.clone()])).await.unwrap();
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        expect_closed(&mut s).await;
        all_dead.backends[0].healthy = false;
        ingress.apply(table(3, vec![all_dead])).await.unwrap();
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        expect_closed(&mut s).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(m.failures(FailureReason::ConnectFailed), 1);
        assert_eq!(m.failures(FailureReason::NoHealthyBackend), 1);
        assert!(ingress
            .metrics_text()
            .contains("vt_ingress_route_failures_total{route=\"f\",reason=\"no_healthy_backend\"} 1\n"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn persisted_table_is_served_after_restart() {
    timeout(T, async {
        let dir = std::env::temp_dir().join(format!("vt-ingress-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.json");
        let _ = std::fs::remove_file(&path);
        let a = tcp_backend("A").await;
        let port = free_port();
        let config = IngressConfig { state_path: Some(path.clone()), ..IngressConfig::loopback() };
        {
            let ingress = Ingress::start(config.clone()).await.unwrap();
            assert_eq!(ingress.table().routes.len(), 0);
            ingress.apply(table(42, vec![tcp_route("c", port, &[a])])).await.unwrap();
            ingress.close_listeners().await;
        }
        assert!(TcpStream::connect(v4(port)).await.is_err());
        let ingress = Ingress::start(config).await.unwrap();
        assert_eq!(ingress.table().version, 42);
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        assert_eq!(read_line(&mut s).await, "A");
        std::fs::remove_dir_all(&dir).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn refused_tables_change_nothing() {
    timeout(T, async {
        let a = tcp_backend("A").await;
        let port = free_port();
        let ingress = start().await;
        ingress.apply(table(1, vec![tcp_route("c", port, &[a])])).await.unwrap();
        // Invalid: duplicate ids.
        let bad = table(2, vec![tcp_route("c", port, &[a]), tcp_route("c", free_port(), &[a])]);
        assert!(matches!(ingress.apply(bad).await, Err(vt_ingress::ApplyError::Invalid(_))));
        assert_eq!(ingress.table().version, 1);
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        assert_eq!(read_line(&mut s).await, "A");
    })
    .await
    .unwrap();
}

/// A port held by another process fails alone: the other routes of the
/// table are served, and the port is served once it is free again.
#[tokio::test]
async fn a_port_in_use_fails_alone_and_is_retried() {
    timeout(T, async {
        let (a, b) = (tcp_backend("A").await, tcp_backend("B").await);
        let (port, taken) = (free_port(), free_port());
        let squatter = std::net::TcpListener::bind(v4(taken)).unwrap();
        let ingress = start().await;
        ingress.apply(table(1, vec![tcp_route("c", port, &[a]), tcp_route("d", taken, &[b])])).await.unwrap();
        assert_eq!(ingress.table().version, 1, "the table is in force");
        let listeners = ingress.listeners().await;
        assert!(matches!(&listeners[&port], vt_ingress::Listener::Listening(addrs) if addrs.len() == 2));
        assert!(
            matches!(&listeners[&taken], vt_ingress::Listener::Failed(why) if why.contains("in use")),
            "{listeners:?}"
        );
        assert!(ingress.metrics_text().contains("vt_ingress_ports_failed 1\n"));
        let mut s = TcpStream::connect(v4(port)).await.unwrap();
        assert_eq!(read_line(&mut s).await, "A");
        // Still held: a retry changes nothing. Freed: the retry binds it.
        assert!(matches!(ingress.rebind().await[&taken], vt_ingress::Listener::Failed(_)));
        drop(squatter);
        assert!(matches!(ingress.rebind().await[&taken], vt_ingress::Listener::Listening(_)));
        let mut s = TcpStream::connect(v4(taken)).await.unwrap();
        assert_eq!(read_line(&mut s).await, "B");
        assert!(ingress.metrics_text().contains("vt_ingress_ports_failed 0\n"));
        // A table without the port forgets it.
        ingress.apply(table(2, vec![tcp_route("c", port, &[a])])).await.unwrap();
        assert_eq!(ingress.listeners().await.keys().copied().collect::<Vec<_>>(), [port]);
    })
    .await
    .unwrap();
}

/// Bulk transfers (relayed through burst buffers) over connections spread
/// across three workers: every byte comes back in order, and the route's
/// counters hold exactly what went each way, the name line included.
#[tokio::test]
async fn bulk_transfers_across_workers_are_exact_and_counted() {
    timeout(Duration::from_secs(30), async {
        let a = tcp_backend("A").await;
        let port = free_port();
        let ingress = Ingress::start(IngressConfig { workers: 3, ..IngressConfig::loopback() }).await.unwrap();
        ingress.apply(table(1, vec![tcp_route("c", port, &[a])])).await.unwrap();
        let conns = 6;
        let len = 3 << 20;
        let mut tasks = Vec::new();
        for c in 0..conns {
            tasks.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..len).map(|i: usize| (i.wrapping_mul(31) + c) as u8).collect();
                let mut s = TcpStream::connect(v4(port)).await.unwrap();
                assert_eq!(read_line(&mut s).await, "A");
                let (mut r, mut w) = s.into_split();
                let sent = data.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(&sent).await.unwrap();
                    w.shutdown().await.unwrap();
                });
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap();
                assert!(got == data, "connection {c}: bytes differ");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let m = ingress.metrics().route("c");
        // Counters are final once every connection has closed on the ingress side.
        while m.active.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(m.connections_total.load(Ordering::Relaxed), conns as u64);
        assert_eq!(m.bytes_in.load(Ordering::Relaxed), (conns * len) as u64);
        assert_eq!(m.bytes_out.load(Ordering::Relaxed), (conns * (len + 2)) as u64);
        assert_eq!(m.failures(FailureReason::Io), 0);
    })
    .await
    .unwrap();
}
