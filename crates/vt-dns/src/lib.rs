//! The guests' resolver (docs/network.md, "DNS"). Each guest is given the node's gateway
//! addresses as name servers; this answers there:
//!
//! * `<process>.<env>.<app>.internal`: the IPv6 addresses (AAAA) of that process's ready
//!   instances **in the caller's org**; `<instance-id>.internal`: that instance's, if it is
//!   the caller's org's. Another org's names do not exist (NXDOMAIN), and an isolated
//!   caller (a workspace) has none.
//! * everything else: forwarded to the host's resolvers (`/etc/resolv.conf`), or to given
//!   ones, by hickory's forwarder (caching, UDP then TCP).
//!
//! The caller is its source address: this node's instances only (the ruleset stops a guest
//! from sending from another's address); anyone else is refused. The [`Directory`] is a
//! snapshot the node agent swaps in whole ([`Resolver::update`]). All DNS parsing and
//! encoding is hickory's.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

mod directory;
#[cfg(feature = "test-support")]
pub mod testing;
mod zone;

pub use directory::{Answer, Caller, Directory, Entry};
pub use zone::TTL;

/// The zone of private names.
pub const ZONE: &str = "internal.";

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the resolver cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("no upstream resolver: {0}")]
    Upstream(String),
    #[error("bad name: {0}")]
    Name(String),
}

/// Where names that are not private are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The host's resolvers (`/etc/resolv.conf`).
    System,
    /// These servers (UDP, then TCP).
    Servers(Vec<SocketAddr>),
}

/// The running resolver; stops when dropped or at [`Resolver::shutdown`].
pub struct Resolver {
    server: Server<Guard>,
    directory: Arc<RwLock<Arc<Directory>>>,
    addrs: Vec<SocketAddr>,
}

/// Refuses whoever is not one of this node's instances, then lets the catalog answer.
struct Guard {
    directory: Arc<RwLock<Arc<Directory>>>,
    catalog: Catalog,
}

#[async_trait::async_trait]
impl RequestHandler for Guard {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let known = self.directory.read().unwrap_or_else(|p| p.into_inner()).caller(request.src().ip()).is_some();
        if known {
            return self.catalog.handle_request::<R, T>(request, response).await;
        }
        tracing::debug!(src = %request.src(), "refused: not an instance of this node");
        let refused =
            MessageResponseBuilder::new(&request.queries, None).error_msg(&request.metadata, ResponseCode::Refused);
        match response.send_response(refused).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

/// A socket on `addr` that may bind before the address exists (`IP_FREEBIND`): the gateway
/// addresses live on the instances' taps, which come and go.
fn socket(addr: SocketAddr, kind: socket2::Type) -> Result<socket2::Socket, DnsError> {
    let bind = |source| DnsError::Bind { addr, source };
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None).map_err(bind)?;
    match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true).map_err(bind)?,
        SocketAddr::V6(_) => {
            s.set_only_v6(true).map_err(bind)?;
            s.set_freebind_v6(true).map_err(bind)?;
        }
    }
    s.set_reuse_address(true).map_err(bind)?;
    s.set_nonblocking(true).map_err(bind)?;
    s.bind(&addr.into()).map_err(bind)?;
    Ok(s)
}

impl Resolver {
    /// Listen on `addrs` (UDP and TCP), answering from `directory`, forwarding to `upstream`.
    pub async fn start(addrs: &[SocketAddr], upstream: Upstream, directory: Directory) -> Result<Resolver, DnsError> {
        let directory = Arc::new(RwLock::new(Arc::new(directory)));
        let mut catalog = Catalog::new();
        let private = zone::PrivateZone::new(directory.clone())?;
        catalog.upsert(private.origin_name(), vec![Arc::new(private)]);
        let provider = TokioRuntimeProvider::default();
        let forwarder = match upstream {
            Upstream::System => ForwardZoneHandler::builder(provider).map_err(DnsError::Upstream)?,
            Upstream::Servers(servers) => {
                let name_servers = servers
                    .iter()
                    .map(|s| {
                        let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                        ns.connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                            .into_iter()
                            .map(|mut c| {
                                c.port = s.port();
                                c
                            })
                            .collect();
                        ns
                    })
                    .collect();
                ForwardZoneHandler::builder_with_config(ForwardConfig { name_servers, options: None }, provider)
            }
        }
        .build()
        .map_err(DnsError::Upstream)?;
        catalog.upsert(LowerName::new(&Name::root()), vec![Arc::new(forwarder)]);
        let mut server = Server::new(Guard { directory: directory.clone(), catalog });
        let mut bound = vec![];
        for &addr in addrs {
            let udp = socket(addr, socket2::Type::DGRAM)?;
            let udp = tokio::net::UdpSocket::from_std(udp.into()).map_err(|source| DnsError::Bind { addr, source })?;
            let local = udp.local_addr().map_err(|source| DnsError::Bind { addr, source })?;
            server.register_socket(udp);
            let tcp = socket(local, socket2::Type::STREAM)?;
            tcp.listen(64).map_err(|source| DnsError::Bind { addr, source })?;
            let tcp =
                tokio::net::TcpListener::from_std(tcp.into()).map_err(|source| DnsError::Bind { addr, source })?;
            server.register_listener(tcp, Duration::from_secs(5), 4096);
            bound.push(local);
        }
        tracing::info!(addrs = ?bound, "guest resolver listening");
        Ok(Resolver { server, directory, addrs: bound })
    }

    /// Where it listens (the ports chosen, for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Answer from this snapshot from now on.
    pub fn update(&self, directory: Directory) {
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(directory);
    }

    /// Stop listening; requests in flight are answered first.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// The listen addresses for these IPs on port 53.
pub fn on_port_53(ips: impl IntoIterator<Item = IpAddr>) -> Vec<SocketAddr> {
    ips.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect()
}
