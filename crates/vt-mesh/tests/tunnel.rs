//! The real device: two network namespaces this test creates, joined by a veth pair, each a
//! "node" whose mesh interface is made by [`WgTools`] (the kernel's WireGuard, else
//! boringtun) and configured with `wg` and `ip`. Traffic between the two nodes' /64s flows
//! through the tunnel, a dead boringtun is started again, a removed peer is cut off, and
//! nothing is left behind. Nothing outside the two namespaces is touched.
//!
//! Needs root, `wg` (wireguard-tools) and, without a WireGuard kernel module, `boringtun-cli`
//! (`scripts/mesh-tools.sh`). Skipped with a message without them, except under `CI=true`.

use std::time::{Duration, Instant};

use vt_firewall::testing::Netns;
use vt_mesh::{Backend, Ensured, Interface, Peer, WgTools, Wireguard, MTU};

struct Node {
    ns: Netns,
    wg: WgTools,
    iface: Interface,
    public_key: String,
    subnet: &'static str,
    /// An "instance" address of the node's /64, local to its namespace.
    instance: &'static str,
}

fn tools_or_skip() -> Option<()> {
    let why = match WgTools::probe().and_then(|wg| wg.check()) {
        Err(e) => e.to_string(),
        Ok(_) if std::process::Command::new("ip").args(["link", "help"]).output().is_err() => "no `ip`".into(),
        Ok(_) => return Some(()),
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "the mesh test: {why}");
    eprintln!("SKIPPED: the mesh test: {why}");
    None
}

fn sh(ns: &Netns, program: &str, args: &[&str]) -> Result<String, String> {
    vt_firewall::testing::run(ns.command(program).args(args))
}

fn node(which: &str, dir: &std::path::Path, subnet: &'static str, instance: &'static str) -> Node {
    let ns = Netns::create(&format!("mesh{which}")).unwrap();
    let key = sh(&ns, "wg", &["genkey"]).unwrap();
    let key_file = dir.join(format!("{which}.key"));
    std::fs::write(&key_file, &key).unwrap();
    let public_key = vt_firewall::testing::run(
        std::process::Command::new("sh").arg("-c").arg(format!("wg pubkey < {}", key_file.display())),
    )
    .unwrap()
    .trim()
    .to_owned();
    // This kernel has no dummy interfaces: the namespace's loopback holds the instance address.
    ns.ip(&["-6", "addr", "add", &format!("{instance}/128"), "dev", "lo", "nodad"]).unwrap();
    let overlay = subnet.replace("::/64", "::1/128").parse().unwrap();
    Node {
        wg: WgTools::probe().unwrap().in_netns(&ns.name).log_to(dir.join(format!("{which}.log"))),
        ns,
        iface: Interface {
            name: format!("vtm{which}{}", std::process::id()),
            private_key: key_file,
            listen_port: 51820,
            address: Some(overlay),
        },
        public_key,
        subnet,
        instance,
    }
}

fn peer_of(n: &Node, endpoint: &str) -> Peer {
    Peer::parse(&n.public_key, endpoint, &[n.subnet.to_owned()]).unwrap()
}

/// `ping` from `from`'s instance address to `to`'s, `count` times.
fn ping(from: &Node, to: &Node, count: u32, size: u32) -> Result<String, String> {
    let (c, s) = (count.to_string(), size.to_string());
    sh(
        &from.ns,
        "ping",
        &["-6", "-n", "-q", "-c", &c, "-i", "0.2", "-W", "1", "-M", "do", "-s", &s, "-I", from.instance, to.instance],
    )
}

/// Pings until one answers (the first handshake takes a round trip), within 10 s.
fn reachable(from: &Node, to: &Node) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match ping(from, to, 1, 56) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn two_nodes_reach_each_others_instances_through_the_tunnel() {
    let Some(()) = tools_or_skip() else { return };
    let Some(probe) = Netns::create_or_skip("meshprobe") else { return };
    drop(probe);
    let dir = tempfile::Builder::new().prefix("vt-mesh-test").tempdir().unwrap();
    let a = node("a", dir.path(), "fd00:77:0:1::/64", "fd00:77:0:1::5");
    let b = node("b", dir.path(), "fd00:77:0:2::/64", "fd00:77:0:2::5");
    a.ns.veth("va", &b.ns, "vb").unwrap();
    a.ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "va"]).unwrap();
    b.ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "vb"]).unwrap();
    // Without the mesh, the instances do not reach each other (no route).
    assert!(ping(&b, &a, 1, 56).is_err());

    for n in [&a, &b] {
        assert_eq!(n.wg.ensure(&n.iface).unwrap(), Ensured::Created);
        assert_eq!(n.wg.mtu(&n.iface.name).unwrap(), Some(u32::from(MTU)), "MTU 1420 on the interface");
    }
    let backend = a.wg.backend().unwrap();
    eprintln!("mesh backend: {backend:?}");
    let changes = a.wg.set_peers(&a.iface, &[peer_of(&b, "10.77.0.2:51820")]).unwrap();
    assert_eq!((changes.peers.len(), changes.routes_added.len()), (1, 1), "{changes:?}");
    b.wg.set_peers(&b.iface, &[peer_of(&a, "10.77.0.1:51820")]).unwrap();

    reachable(&b, &a).unwrap();
    // A full-size packet for the 1420 MTU crosses (1372 + 8 ICMPv6 + 40 IPv6 = 1420), unfragmented.
    ping(&b, &a, 3, 1372).unwrap();
    // One larger does not leave (the MTU is the interface's, not fragmentation's).
    assert!(ping(&b, &a, 1, 1373).is_err(), "a packet over the MTU crossed unfragmented");
    let held = a.wg.current(&a.iface.name).unwrap().unwrap();
    assert_eq!(held.peers.len(), 1);
    let p = &held.peers[0];
    assert!(p.rx_bytes > 0 && p.tx_bytes > 0, "no traffic through the tunnel: {p:?}");
    assert_eq!(held.routes, [a_subnet(&b)].into());

    // The same list again changes nothing, and keeps the session.
    assert_eq!(a.wg.ensure(&a.iface).unwrap(), Ensured::Unchanged);
    assert!(a.wg.set_peers(&a.iface, &[peer_of(&b, "10.77.0.2:51820")]).unwrap().is_empty());
    let again = a.wg.current(&a.iface.name).unwrap().unwrap();
    assert_eq!(again.peers[0].latest_handshake, p.latest_handshake);

    // A dead boringtun is started again by the next `ensure`, and the peers set again.
    if backend == Backend::Boringtun {
        let pid = a.wg.device_pid().unwrap();
        vt_firewall::testing::run(std::process::Command::new("kill").args(["-KILL", &pid.to_string()])).unwrap();
        let start = Instant::now();
        while a.wg.mtu(&a.iface.name).unwrap().is_some() {
            assert!(start.elapsed() < Duration::from_secs(5), "the interface outlived its device");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(a.wg.ensure(&a.iface).unwrap(), Ensured::Created);
        assert_ne!(a.wg.device_pid(), Some(pid));
        a.wg.set_peers(&a.iface, &[peer_of(&b, "10.77.0.2:51820")]).unwrap();
        // The new device has no session and B still holds the old one: A's new peers get a
        // handshake at once (not at the first keepalive, 25 s later), so B reaches A again.
        reachable(&b, &a).unwrap();
    }

    // A peer removed from the list is cut off: no peer, no route.
    let changes = a.wg.set_peers(&a.iface, &[]).unwrap();
    assert_eq!((changes.peers.len(), changes.routes_removed.len()), (1, 1), "{changes:?}");
    assert!(ping(&b, &a, 2, 56).is_err(), "a removed peer still reaches the node");
    let held = a.wg.current(&a.iface.name).unwrap().unwrap();
    assert!(held.peers.is_empty() && held.routes.is_empty(), "{held:?}");

    // Removing leaves no interface and no device process.
    for n in [&a, &b] {
        let pid = n.wg.device_pid();
        n.wg.remove(&n.iface).unwrap();
        assert_eq!(n.wg.mtu(&n.iface.name).unwrap(), None);
        if let Some(pid) = pid {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "boringtun {pid} left running");
        }
        n.wg.remove(&n.iface).unwrap();
    }
}

fn a_subnet(n: &Node) -> ipnet::IpNet {
    n.subnet.parse().unwrap()
}
