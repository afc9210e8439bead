//! The resolver over real sockets on loopback: callers told apart by their source address
//! (127.0.0.1 is an instance of org 1, 127.0.0.2 one of org 2, 127.0.0.4 an isolated one
//! of org 1, 127.0.0.3 nobody), private names from the directory, public names forwarded
//! to an upstream server (a hickory authoritative server for `example.test.` on loopback).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use hickory_server::server::Server;
use hickory_server::zone_handler::Catalog;
use vt_dns::{Caller, Directory, Entry, Resolver, Upstream};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An authoritative server for `example.test.` (`www.example.test. A 198.51.100.7`).
async fn upstream() -> (Server<Catalog>, SocketAddr) {
    let www = [("www.example.test.", ip("198.51.100.7"))];
    vt_dns::testing::authoritative("127.0.0.1:0".parse().unwrap(), "example.test.", &www).await
}

fn directory() -> Directory {
    let org1 = Caller { org: "org_1".into(), isolated: false };
    let org2 = Caller { org: "org_2".into(), isolated: false };
    let ws = Caller { org: "org_1".into(), isolated: true };
    let peer = |org: &str, id: &str, last: u16, ready| Entry {
        org: org.into(),
        instance_id: id.into(),
        app: "app".into(),
        env: "prod".into(),
        process: "web".into(),
        address: Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, last),
        ready,
    };
    Directory::new(
        [(ip("127.0.0.1"), org1), (ip("127.0.0.2"), org2), (ip("127.0.0.4"), ws)],
        vec![
            peer("org_1", "inst_01b", 0xb, true),
            peer("org_1", "inst_01d", 0xd, false),
            peer("org_2", "inst_01c", 0xc, true),
        ],
    )
}

/// One query from `from` (UDP): the answer's code and the addresses in it.
async fn ask(server: SocketAddr, from: &str, name: &str, rtype: RecordType) -> (ResponseCode, Vec<IpAddr>) {
    let sock = tokio::net::UdpSocket::bind((ip(from), 0)).await.unwrap();
    let mut q = Message::new(0x5151, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf)).await.expect("an answer").unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 0x5151);
    let addrs = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    (m.metadata.response_code, addrs)
}

#[tokio::test]
async fn private_names_per_org_public_names_forwarded_strangers_refused() {
    let (_up, up_addr) = upstream().await;
    let resolver = Resolver::start(&["127.0.0.1:0".parse().unwrap()], Upstream::Servers(vec![up_addr]), directory())
        .await
        .unwrap();
    let at = resolver.local_addrs()[0];
    let b = ip("fd00::1:0:0:0:b");
    let c = ip("fd00::1:0:0:0:c");

    // Org 1 gets its ready instance; org 2 the same name's instance of its own.
    assert_eq!(
        ask(at, "127.0.0.1", "web.prod.app.internal.", RecordType::AAAA).await,
        (ResponseCode::NoError, vec![b])
    );
    assert_eq!(
        ask(at, "127.0.0.2", "web.prod.app.internal.", RecordType::AAAA).await,
        (ResponseCode::NoError, vec![c])
    );
    // Names are case-insensitive.
    assert_eq!(ask(at, "127.0.0.1", "WEB.Prod.app.internal.", RecordType::AAAA).await.1, vec![b]);
    // The name exists but has no IPv4: no error, no answer.
    assert_eq!(ask(at, "127.0.0.1", "web.prod.app.internal.", RecordType::A).await, (ResponseCode::NoError, vec![]));
    // Instance ids: live ones of the caller's org, whether ready or not.
    let d = ip("fd00::1:0:0:0:d");
    assert_eq!(ask(at, "127.0.0.1", "inst_01d.internal.", RecordType::AAAA).await, (ResponseCode::NoError, vec![d]));
    assert_eq!(ask(at, "127.0.0.2", "inst_01b.internal.", RecordType::AAAA).await, (ResponseCode::NXDomain, vec![]));
    // An isolated caller (a workspace) has no private names.
    assert_eq!(
        ask(at, "127.0.0.4", "web.prod.app.internal.", RecordType::AAAA).await,
        (ResponseCode::NXDomain, vec![])
    );
    assert_eq!(ask(at, "127.0.0.1", "nothing.prod.app.internal.", RecordType::AAAA).await.0, ResponseCode::NXDomain);

    // Public names go upstream, for every caller.
    let www = ip("198.51.100.7");
    assert_eq!(ask(at, "127.0.0.1", "www.example.test.", RecordType::A).await, (ResponseCode::NoError, vec![www]));
    assert_eq!(ask(at, "127.0.0.4", "www.example.test.", RecordType::A).await, (ResponseCode::NoError, vec![www]));
    assert_eq!(ask(at, "127.0.0.1", "nope.example.test.", RecordType::A).await.0, ResponseCode::NXDomain);

    // Not one of the node's instances: refused, whatever the name.
    assert_eq!(ask(at, "127.0.0.3", "web.prod.app.internal.", RecordType::AAAA).await.0, ResponseCode::Refused);
    assert_eq!(ask(at, "127.0.0.3", "www.example.test.", RecordType::A).await.0, ResponseCode::Refused);

    // A new snapshot: B is gone, D is ready.
    let next = Directory::new(
        [(ip("127.0.0.1"), Caller { org: "org_1".into(), isolated: false })],
        vec![Entry {
            org: "org_1".into(),
            instance_id: "inst_01d".into(),
            app: "app".into(),
            env: "prod".into(),
            process: "web".into(),
            address: Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0xd),
            ready: true,
        }],
    );
    resolver.update(next);
    assert_eq!(ask(at, "127.0.0.1", "web.prod.app.internal.", RecordType::AAAA).await.1, vec![d]);
    assert_eq!(ask(at, "127.0.0.2", "web.prod.app.internal.", RecordType::AAAA).await.0, ResponseCode::Refused);
    resolver.shutdown().await;
}
