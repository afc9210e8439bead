//! An authoritative server for tests: the upstream the resolver forwards to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// Serve zone `origin` (`example.test.`) with an A or AAAA record per `(name, address)` on
/// `addr` (UDP and TCP; port 0 picks one). Returns the server (it stops when dropped) and
/// where it listens.
pub async fn authoritative(
    addr: SocketAddr,
    origin: &str,
    records: &[(&str, IpAddr)],
) -> (Server<Catalog>, SocketAddr) {
    let origin = Name::from_ascii(origin).expect("a valid zone name");
    let zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(origin.clone(), origin.clone(), 1, 3600, 600, 86400, 60);
    zone.upsert(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1).await;
    for (name, ip) in records {
        let name = Name::from_ascii(name).expect("a valid record name");
        let rdata = match ip {
            IpAddr::V4(a) => RData::A(A(*a)),
            IpAddr::V6(a) => RData::AAAA(AAAA(*a)),
        };
        zone.upsert(Record::from_rdata(name, 60, rdata), 1).await;
    }
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::new(zone)]);
    let udp = tokio::net::UdpSocket::bind(addr).await.expect("the zone's UDP socket");
    let addr = udp.local_addr().expect("a bound socket's address");
    let tcp = tokio::net::TcpListener::bind(addr).await.expect("the zone's TCP socket");
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    (server, addr)
}
