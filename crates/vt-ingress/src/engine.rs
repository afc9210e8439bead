//! The ingress engine: listeners, table swaps, and the per-connection path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::{FailureReason, Metrics, RejectReason, RouteMetrics};
use crate::route::{Protocol, Route, RouteTable, TableError};
use crate::{proxy_v2, relay, sni};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Addresses every route port is bound on. IPv6 sockets are bound
    /// v6-only so an IPv4 address can share the port. Addresses whose family
    /// the host lacks are skipped as long as one address binds.
    pub bind_addrs: Vec<IpAddr>,
    /// How long a TLS client has to send its complete ClientHello.
    pub client_hello_timeout: Duration,
    /// Timeout of one backend connect attempt.
    pub connect_timeout: Duration,
    /// Where the applied table is persisted and loaded from at start.
    pub state_path: Option<PathBuf>,
    /// Small buffer of each relay direction. A read that fills it starts a
    /// burst, relayed through a 256 KiB buffer lent by the worker thread
    /// until a read comes back short.
    pub copy_buf_size: usize,
    /// Data-plane threads, each with its own single-threaded runtime polling
    /// every listening socket; 0 means one per CPU.
    pub workers: usize,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            bind_addrs: vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED), IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            client_hello_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            state_path: None,
            copy_buf_size: 16 * 1024,
            workers: 0,
        }
    }
}

impl IngressConfig {
    /// Loopback only (`::1` and `127.0.0.1`), for tests and benches.
    pub fn loopback() -> Self {
        IngressConfig {
            bind_addrs: vec![IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ..IngressConfig::default()
        }
    }
}

/// Why [`Ingress::apply`] refused a table. The table in force is unchanged.
///
/// A port that cannot be bound is not a reason to refuse a table: the port's
/// routes wait, the others are served, and the port is retried (see
/// [`Ingress::listeners`], [`Ingress::rebind`]).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid route table: {0}")]
    Invalid(#[from] TableError),
    #[error("cannot persist route table: {0}")]
    Persist(#[source] io::Error),
}

/// Why [`Ingress::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The persisted table could not be read.
    #[error("cannot load persisted route table: {0}")]
    Load(#[source] io::Error),
    /// The persisted table could not be applied.
    #[error("cannot apply persisted route table: {0}")]
    Apply(#[source] ApplyError),
    /// A data-plane thread could not be started.
    #[error("cannot start ingress worker threads: {0}")]
    Workers(#[source] io::Error),
}

/// A route as the data path uses it.
struct ActiveRoute {
    route: Route,
    healthy: Vec<SocketAddr>,
    next: AtomicUsize,
    metrics: Arc<RouteMetrics>,
}

enum PortRoutes {
    Tls(HashMap<String, Arc<ActiveRoute>>),
    Tcp(Arc<ActiveRoute>),
}

/// A validated table compiled for lookups; swapped as a whole.
struct Compiled {
    table: Arc<RouteTable>,
    ports: HashMap<u16, PortRoutes>,
}

impl Compiled {
    fn empty() -> Self {
        Compiled { table: Arc::new(RouteTable::default()), ports: HashMap::new() }
    }

    fn build(table: RouteTable, metrics: &Metrics) -> Self {
        let mut ports: HashMap<u16, PortRoutes> = HashMap::new();
        for route in &table.routes {
            let active = Arc::new(ActiveRoute {
                healthy: route.backends.iter().filter(|b| b.healthy).map(|b| b.addr).collect(),
                next: AtomicUsize::new(0),
                metrics: metrics.route(&route.id),
                route: route.clone(),
            });
            match route.protocol {
                Protocol::Tcp => {
                    ports.insert(route.listen_port, PortRoutes::Tcp(active));
                }
                Protocol::Tls => {
                    // validate() guarantees a valid hostname.
                    let host = route
                        .hostname
                        .as_deref()
                        .and_then(|h| sni::normalize_hostname(h.as_bytes()))
                        .unwrap_or_default();
                    let entry = ports.entry(route.listen_port).or_insert_with(|| PortRoutes::Tls(HashMap::new()));
                    if let PortRoutes::Tls(map) = entry {
                        map.insert(host, active);
                    }
                }
            }
        }
        Compiled { table: Arc::new(table), ports }
    }
}

/// Accept loops of one port (one per worker and address); aborting them
/// closes the listening sockets and leaves accepted connections alone.
struct PortListener {
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl PortListener {
    /// Stop accepting, and return once every socket of the port is closed.
    async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for PortListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The data-plane threads. Each runs a single-threaded runtime that polls
/// every listening socket and runs the connections it accepts to their end,
/// so a connection never changes thread and a wakeup never crosses threads
/// (the model of HAProxy's threads, which also share one listening socket).
struct Workers {
    handles: Vec<Handle>,
    /// Dropped with the ingress: each thread then stops once its established
    /// connections have ended.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    fn start(count: usize) -> io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut handles = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        for i in 0..count {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, rx) = oneshot::channel::<()>();
            handles.push(rt.handle().clone());
            stop.push(tx);
            std::thread::Builder::new().name(format!("vt-ingress-{i}")).spawn(move || {
                rt.block_on(async {
                    let _ = rx.await;
                    // Established connections run to completion.
                    while Handle::current().metrics().num_alive_tasks() > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            })?;
        }
        Ok(Workers { handles, _stop: stop })
    }
}

/// The ports of the table in force: bound, or failed with the bind error.
#[derive(Default)]
struct Ports {
    bound: HashMap<u16, PortListener>,
    failed: BTreeMap<u16, String>,
}

/// Whether the ingress listens on a port of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    /// Bound on these addresses.
    Listening(Vec<SocketAddr>),
    /// Could not be bound (in use, or privileged): why. Retried by every
    /// [`Ingress::apply`] and [`Ingress::rebind`].
    Failed(String),
}

struct Inner {
    config: IngressConfig,
    current: ArcSwap<Compiled>,
    metrics: Metrics,
    ports: tokio::sync::Mutex<Ports>,
    workers: Workers,
}

/// The L4 ingress. Cheap to clone; all clones drive the same engine.
#[derive(Clone)]
pub struct Ingress {
    inner: Arc<Inner>,
}

impl Ingress {
    /// Start with the table persisted at `config.state_path` (if any), so the
    /// ingress serves the last applied routes without the control plane.
    pub async fn start(config: IngressConfig) -> Result<Ingress, StartError> {
        let persisted = match &config.state_path {
            Some(path) => RouteTable::load(path).map_err(StartError::Load)?,
            None => None,
        };
        let workers = Workers::start(config.workers).map_err(StartError::Workers)?;
        let ingress = Ingress {
            inner: Arc::new(Inner {
                config,
                current: ArcSwap::from_pointee(Compiled::empty()),
                metrics: Metrics::default(),
                ports: tokio::sync::Mutex::new(Ports::default()),
                workers,
            }),
        };
        if let Some(table) = persisted {
            ingress.apply(table).await.map_err(StartError::Apply)?;
        }
        Ok(ingress)
    }

    /// Replace the route table. Validates, persists, swaps atomically, closes
    /// the listeners of ports no longer used and opens those of new ports.
    /// Established connections keep their backend whatever the change. A port
    /// that cannot be bound fails alone: its routes wait for it (see
    /// [`Ingress::listeners`]) and every other route is served. On error
    /// nothing changes.
    pub async fn apply(&self, table: RouteTable) -> Result<(), ApplyError> {
        table.validate()?;
        let inner = &self.inner;
        let mut ports = inner.ports.lock().await;
        if let Some(path) = inner.config.state_path.clone() {
            let to_save = table.clone();
            tokio::task::spawn_blocking(move || to_save.save(&path))
                .await
                .map_err(|e| ApplyError::Persist(io::Error::other(e)))?
                .map_err(ApplyError::Persist)?;
        }
        let wanted = table.ports();
        let version = table.version;
        let compiled = Compiled::build(table, &inner.metrics);
        let live_ids: std::collections::HashSet<String> = compiled.table.routes.iter().map(|r| r.id.clone()).collect();
        inner.current.store(Arc::new(compiled));
        inner.metrics.table_version.store(version, Relaxed);
        inner.metrics.tables_applied.fetch_add(1, Relaxed);
        inner.metrics.retain_routes(&|id| live_ids.contains(id));
        let unused: Vec<u16> = ports.bound.keys().filter(|p| !wanted.contains(p)).copied().collect();
        for port in unused {
            if let Some(listener) = ports.bound.remove(&port) {
                listener.close().await;
            }
        }
        ports.failed.retain(|port, _| wanted.contains(port));
        self.bind_missing(&mut ports, &wanted);
        Ok(())
    }

    /// Try again to bind the ports of the table in force that failed; what
    /// each port is now.
    pub async fn rebind(&self) -> BTreeMap<u16, Listener> {
        let mut ports = self.inner.ports.lock().await;
        if !ports.failed.is_empty() {
            let wanted = self.table().ports();
            self.bind_missing(&mut ports, &wanted);
        }
        Self::listeners_of(&ports)
    }

    /// What each port of the table in force is: listening, or failed and why.
    pub async fn listeners(&self) -> BTreeMap<u16, Listener> {
        Self::listeners_of(&*self.inner.ports.lock().await)
    }

    fn listeners_of(ports: &Ports) -> BTreeMap<u16, Listener> {
        let bound = ports.bound.iter().map(|(port, l)| (*port, Listener::Listening(l.addrs.clone())));
        let failed = ports.failed.iter().map(|(port, why)| (*port, Listener::Failed(why.clone())));
        bound.chain(failed).collect()
    }

    /// Bind every port of `wanted` not bound yet; record the ones that fail.
    fn bind_missing(&self, ports: &mut Ports, wanted: &BTreeSet<u16>) {
        for &port in wanted {
            if ports.bound.contains_key(&port) {
                continue;
            }
            let workers = &self.inner.workers.handles;
            let socks = match bind_port(&self.inner.config.bind_addrs, port, workers.len()) {
                Ok(socks) => socks,
                Err(e) => {
                    ports.failed.insert(port, e.to_string());
                    continue;
                }
            };
            ports.failed.remove(&port);
            let mut addrs = Vec::new();
            let mut tasks = Vec::new();
            for per_worker in socks {
                if let Some(Ok(a)) = per_worker.first().map(std::net::TcpListener::local_addr) {
                    addrs.push(a);
                }
                for (sock, worker) in per_worker.into_iter().zip(workers) {
                    tasks.push(worker.spawn(accept_loop(Arc::downgrade(&self.inner), sock, port)));
                }
            }
            ports.bound.insert(port, PortListener { addrs, tasks });
        }
        self.inner.metrics.ports_failed.store(ports.failed.len() as u64, Relaxed);
    }

    /// The table in force.
    pub fn table(&self) -> Arc<RouteTable> {
        self.inner.current.load().table.clone()
    }

    /// Addresses actually bound for `port` (empty if not listening).
    pub async fn local_addrs(&self, port: u16) -> Vec<SocketAddr> {
        let ports = self.inner.ports.lock().await;
        ports.bound.get(&port).map(|l| l.addrs.clone()).unwrap_or_default()
    }

    /// Counters, for tests and embedding.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// All counters in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render()
    }

    /// Close every listener; return once their sockets are closed.
    /// Established connections run to completion.
    pub async fn close_listeners(&self) {
        let mut ports = self.inner.ports.lock().await;
        for (_, listener) in ports.bound.drain() {
            listener.close().await;
        }
        ports.failed.clear();
    }
}

/// Bind `port` on every address; for each address, one handle on the
/// listening socket per worker (duplicated descriptors of one socket: every
/// worker polls it and whichever runs first accepts, so a worker that is not
/// scheduled strands no connection). No `SO_REUSEPORT`: another process
/// holding the port makes the bind fail.
fn bind_port(addrs: &[IpAddr], port: u16, workers: usize) -> io::Result<Vec<Vec<std::net::TcpListener>>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::new();
    let mut last_err = None;
    for &ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let result = (|| -> io::Result<Vec<std::net::TcpListener>> {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
            if addr.is_ipv6() {
                sock.set_only_v6(true)?;
            }
            sock.set_reuse_address(true)?;
            // Inherited by every accepted socket: no system call per connection.
            sock.set_tcp_nodelay(true)?;
            sock.set_nonblocking(true)?;
            sock.bind(&addr.into())?;
            sock.listen(1024)?;
            let first = std::net::TcpListener::from(sock);
            let mut handles = Vec::with_capacity(workers);
            for _ in 1..workers {
                handles.push(first.try_clone()?);
            }
            handles.push(first);
            Ok(handles)
        })();
        match result {
            Ok(l) => out.push(l),
            // The host lacks this address family: skip it.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(
            last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no bind address configured"))
        );
    }
    Ok(out)
}

async fn accept_loop(inner: Weak<Inner>, listener: std::net::TcpListener, port: u16) {
    // Registered with the reactor of the worker this runs on.
    let Ok(listener) = TcpListener::from_std(listener) else { return };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(inner) = inner.upgrade() else { return };
                tokio::spawn(handle(inner, stream, peer, port));
            }
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decrements the active gauge however the connection ends.
struct ActiveGuard(Arc<RouteMetrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

async fn handle(inner: Arc<Inner>, mut client: TcpStream, peer: SocketAddr, port: u16) {
    // TCP_NODELAY comes from the listening socket.
    let is_tls = match inner.current.load().ports.get(&port) {
        None => {
            inner.metrics.reject(port, RejectReason::NoRoute);
            return;
        }
        Some(PortRoutes::Tcp(_)) => false,
        Some(PortRoutes::Tls(_)) => true,
    };
    let mut initial = Vec::new();
    let host = if is_tls {
        match read_client_hello(&mut client, &mut initial, inner.config.client_hello_timeout).await {
            Ok(host) => Some(host),
            Err(reason) => {
                inner.metrics.reject(port, reason);
                return;
            }
        }
    } else {
        None
    };
    // Route with the table in force now (the ClientHello may have taken a while).
    let route = {
        let current = inner.current.load();
        match (current.ports.get(&port), host) {
            (Some(PortRoutes::Tcp(r)), None) => r.clone(),
            (Some(PortRoutes::Tls(map)), Some(h)) => match map.get(&h) {
                Some(r) => r.clone(),
                None => {
                    inner.metrics.reject(port, RejectReason::UnknownSni);
                    return;
                }
            },
            _ => {
                inner.metrics.reject(port, RejectReason::NoRoute);
                return;
            }
        }
    };
    forward(&inner.config, route, client, initial, peer, port).await;
}

/// Read until a complete ClientHello is buffered in `buf`; return its SNI.
async fn read_client_hello<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<String, RejectReason> {
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let room = sni::MAX_WIRE_PREFIX.saturating_sub(buf.len()).min(chunk.len());
            if room == 0 {
                return Err(RejectReason::NotTls);
            }
            match client.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => return Err(RejectReason::ClientClosed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            match sni::detect(buf) {
                sni::Detect::NeedMore => continue,
                sni::Detect::NotTls(_) => return Err(RejectReason::NotTls),
                sni::Detect::NoSni => return Err(RejectReason::NoSni),
                sni::Detect::Sni(h) => return Ok(h),
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r,
        Err(_) => Err(RejectReason::Timeout),
    }
}

async fn connect_backend(config: &IngressConfig, route: &ActiveRoute) -> Result<TcpStream, FailureReason> {
    let n = route.healthy.len();
    if n == 0 {
        return Err(FailureReason::NoHealthyBackend);
    }
    let start = route.next.fetch_add(1, Relaxed);
    for i in 0..n {
        let addr = route.healthy[(start + i) % n];
        match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            _ => {
                route.metrics.backend_connect_errors.fetch_add(1, Relaxed);
            }
        }
    }
    Err(FailureReason::ConnectFailed)
}

async fn forward(
    config: &IngressConfig,
    route: Arc<ActiveRoute>,
    client: TcpStream,
    initial: Vec<u8>,
    peer: SocketAddr,
    port: u16,
) {
    let peeked = initial.len();
    let m = route.metrics.clone();
    m.connections_total.fetch_add(1, Relaxed);
    m.active.fetch_add(1, Relaxed);
    let _guard = ActiveGuard(m.clone());
    let mut backend = match connect_backend(config, &route).await {
        Ok(b) => b,
        Err(reason) => {
            m.fail(reason);
            return;
        }
    };
    let _ = backend.set_nodelay(true);
    // The PROXY header goes in the same write as the peeked bytes.
    let first = if route.route.proxy_protocol {
        let local = client.local_addr().unwrap_or_else(|_| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
        let mut first = proxy_v2::encode_proxy(peer, local);
        first.extend_from_slice(&initial);
        first
    } else {
        initial
    };
    if !first.is_empty() && backend.write_all(&first).await.is_err() {
        m.fail(FailureReason::BackendWrite);
        return;
    }
    m.bytes_in.fetch_add(peeked as u64, Relaxed);
    drop(first);
    // The first error ends both directions; a clean EOF on one side is
    // propagated as a write shutdown (half close) to the other.
    if relay::relay(client, backend, &m.bytes_in, &m.bytes_out, config.copy_buf_size).await.is_err() {
        m.fail(FailureReason::Io);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rustls_client_hello;

    #[tokio::test]
    async fn client_hello_trickling_in_byte_by_byte() {
        let hello = rustls_client_hello("slow.test");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = hello.clone();
        let writer = tokio::spawn(async move {
            for b in sent {
                client.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut buf = Vec::new();
        let host = read_client_hello(&mut server, &mut buf, Duration::from_secs(5)).await;
        assert_eq!(host, Ok("slow.test".to_owned()));
        assert_eq!(buf, hello, "every byte read is kept for the backend");
        drop(writer.await.unwrap());
    }

    /// Accepted sockets inherit TCP_NODELAY from the listening socket, which
    /// is why `handle` does not set it.
    #[test]
    fn accepted_sockets_have_nodelay() {
        let mut socks = bind_port(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 0, 2).unwrap();
        let handles = socks.pop().unwrap();
        assert_eq!(handles.len(), 2);
        let addr = handles[0].local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        handles[1].set_nonblocking(false).unwrap();
        let (accepted, _) = handles[1].accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn client_hello_outcomes() {
        let hello = rustls_client_hello("x.test");
        // Timeout: half a ClientHello, then silence.
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(&hello[..hello.len() / 2]).await.unwrap();
        let mut buf = Vec::new();
        let r = read_client_hello(&mut server, &mut buf, Duration::from_millis(50)).await;
        assert_eq!(r, Err(RejectReason::Timeout));
        // Closed before complete.
        drop(client);
        let r = read_client_hello(&mut server, &mut Vec::new(), Duration::from_secs(1)).await;
        assert_eq!(r, Err(RejectReason::ClientClosed));
        // Not TLS.
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        let r = read_client_hello(&mut server, &mut Vec::new(), Duration::from_secs(1)).await;
        assert_eq!(r, Err(RejectReason::NotTls));
    }
}
